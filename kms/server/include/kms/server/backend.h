// Everything kmsd serves with, opened from the configuration in dependency order: the
// audit log (with its refusal summarizer), the token (module, URI, login, profile, the KMS keys),
// the key database and key store, the conference registry, and the two services. Also feeds
// /metrics (PKCS#11 calls, session pool, key store, audit log) and purges expired conferences
// periodically.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "kms/audit/audit_log.h"
#include "kms/audit/refusal_summary.h"
#include "kms/core/bridge_service.h"
#include "kms/core/key_request_service.h"
#include "kms/core/stored_conference_registry.h"
#include "kms/server/config.h"
#include "kms/server/logger.h"
#include "kms/server/metrics.h"
#include "kms/server/server.h"
#include "tokens/key_database.h"
#include "tokens/key_store.h"
#include "tokens/token_context.h"

namespace kms::server {

class KmsBackend {
 public:
  // Throws with a message naming what failed (audit file, token, PIN, keys, database).
  KmsBackend(const Config& config, Metrics& metrics, Logger& logger);
  ~KmsBackend();
  KmsBackend(const KmsBackend&) = delete;
  KmsBackend& operator=(const KmsBackend&) = delete;

  // The server's routes and token-stall probe, on the parts opened here.
  Backend backend();
  tokens::TokenContext& token() { return *token_; }
  // A clean stop, once the server has drained: syncs the audit file and deletes the
  // registry's journal rows it now holds (so a restart has nothing to restore). Never
  // throws; the destructor does it too if it was not called.
  void flush_audit_journal();

 private:
  std::vector<Route> routes();  // the route table: routes.cpp
  void purge_loop();

  Metrics& metrics_;
  Logger& logger_;
  std::unique_ptr<audit::AuditLog> audit_;
  // What the services and the server write to: the log, with unauthenticated refusals
  // summarized. Destroyed before the log (its last summaries go into it).
  std::unique_ptr<audit::RefusalSummarizer> refusals_;
  std::unique_ptr<tokens::TokenContext> token_;
  std::unique_ptr<tokens::KeyDatabase> database_;
  std::unique_ptr<tokens::KeyStore> keys_;
  std::unique_ptr<StoredConferenceRegistry> registry_;
  std::unique_ptr<TokenKeyRequestService> key_requests_;
  std::unique_ptr<TokenBridgeService> bridges_;

  std::mutex purge_mutex_;
  std::condition_variable purge_wake_;
  bool stopping_ = false;
  std::thread purge_thread_;
  std::uint64_t pruned_seq_ = 0;  // journal rows deleted up to here
};

}  // namespace kms::server
