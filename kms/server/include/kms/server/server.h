// kmsd's HTTPS server: Boost.Beast HTTP/1.1 with keep-alive over TLS on a pool of I/O
// threads; every token-touching call (the services, /readyz) runs on a separate worker
// pool, so a slow token call never stalls the I/O threads. Limits (connections, header and
// body size, handshake/read/write timeouts, queued requests) bound what a client can hold.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kms/audit.h"
#include "kms/server/config.h"
#include "kms/server/logger.h"
#include "kms/server/metrics.h"
#include "kms/services.h"

namespace kms::server {

// What the server calls; it owns none of it.
struct Backend {
  KeyRequestService* key_requests = nullptr;
  BridgeService* bridges = nullptr;
  AuditSink* audit = nullptr;   // for refusals the server decides itself (client certificate)
  std::function<bool()> ready;  // token reachable and logged in (runs on a worker)
};

class Server {
 public:
  // handle_signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the TLS files (caught
  // from construction on, so a signal that arrives during start-up is not lost).
  Server(const Config& config, Backend backend, Metrics& metrics, Logger& logger,
         bool handle_signals = true);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens; returns the bound port (useful with port 0). Throws on failure.
  std::uint16_t listen();
  // Serves until SIGTERM/SIGINT (when handle_signals) or stop(), then drains in-flight
  // requests (up to drain_timeout) and returns.
  void run();
  void stop();                 // thread-safe: begin the drain
  void reload_certificates();  // thread-safe

  struct Impl;  // server.cpp only

 private:
  std::unique_ptr<Impl> impl_;
};

// The HTTP status for a protocol error code (docs/SERVER.md, "Errors").
unsigned http_status_for(ErrorCode code);

// Why a request's Content-Type field value is not acceptable for the JSON endpoints (415),
// or nullopt: application/json (case-insensitive), parameters allowed, a charset parameter
// only as utf-8 (docs/SERVER.md "Endpoints").
std::optional<std::string> json_content_type_problem(std::string_view value);

}  // namespace kms::server
