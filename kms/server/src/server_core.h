// What the connections of one server share: configuration, routes, metrics, the log, the
// connection budgets, the worker pool, and the drain flag. Owned by Server::Impl
// (server.cpp), which adds the lifecycle (listener, signals, drain).
#pragma once

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "admission_control.h"
#include "connection_admission.h"
#include "kms/server/config.h"
#include "kms/server/logger.h"
#include "kms/server/metrics.h"
#include "kms/server/route.h"
#include "kms/server/server.h"
#include "router.h"

namespace kms::server {

class Connection;

class ServerCore final : public ServerState {
 public:
  // `workers` may be constructed after this (it must be destroyed first: its jobs hold
  // connections, which deregister here); it is not used before run().
  ServerCore(const Config& config, Backend backend, Metrics& metrics, Logger& logger,
             boost::asio::thread_pool& workers);

  bool draining() const override { return draining_.load(); }
  bool token_stalled() const override;
  bool begin_draining() { return !draining_.exchange(true); }  // false if already draining
  std::string next_request_id();

  const Config config;
  const Router router;
  Metrics& metrics;
  Logger& logger;
  ConnectionAdmission admission;       // who may hold a connection
  AdmissionControl request_admission;  // which request may go to the workers
  boost::asio::thread_pool& workers;
  std::function<void()> reopen_logs;  // Backend::reopen_logs, called on SIGHUP

  // Every open connection, for the drain.
  std::mutex connections_mutex;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;

 private:
  std::function<std::chrono::nanoseconds()> oldest_token_call_;
  const std::string id_prefix_;
  std::atomic<std::uint64_t> request_counter_{0};
  std::atomic<bool> draining_{false};
};

}  // namespace kms::server
