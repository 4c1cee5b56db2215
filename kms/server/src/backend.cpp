#include "kms/server/backend.h"

#include <chrono>

#include "hsm/instrumentation.h"
#include "start_key_check.h"
#include "tokens/unix_time.h"

namespace kms::server {
namespace {

// One metric family with a single unlabelled sample; `type` is "counter" or "gauge".
void single_metric(std::string& out, const char* name, const char* type, const char* help,
                   std::uint64_t value) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + std::to_string(value) + "\n";
}

}  // namespace

KmsBackend::KmsBackend(const Config& config, Metrics& metrics, Logger& logger)
    : metrics_(metrics), logger_(logger) {
  metrics.rv_namer = [](unsigned long rv) { return hsm::rv_name(rv); };
  hsm::set_call_observer([&metrics](const char* function, CK_RV rv, std::chrono::nanoseconds t) {
    metrics.pkcs11_call(function, rv, t);
  });

  audit::AuditLogOptions audit_options;
  audit_options.retry_interval = config.audit.retry_interval;
  audit_options.rotate_bytes = config.audit.rotate_bytes;
  audit_options.rotate_age = config.audit.rotate_age;
  audit_options.sync_interval = config.audit.sync_interval;
  audit_ = std::make_unique<audit::AuditLog>(config.audit.path.string(), audit_options);
  // One line per change of the log's state, never one per refused record.
  audit_->on_health_change([this](bool up, const std::string& detail) {
    if (up) {
      logger_.warn("audit log recovered", {{"detail", detail}});
    } else {
      logger_.error("audit log failed: admissions and releases are refused until it recovers",
                    {{"error", detail}});
    }
  });
  audit::RefusalSummaryOptions refusal_options;
  refusal_options.interval = config.audit.refusal_summary_interval;
  refusals_ = std::make_unique<audit::RefusalSummarizer>(*audit_, refusal_options);
  // kmsd only uses keys: its sessions are read-only unless the configuration says otherwise
  // (docs/OPERATIONS.md "Key custody").
  tokens::TokenConfig token_config = config.token;
  if (!token_config.read_only_sessions) token_config.read_only_sessions = true;
  token_ = tokens::TokenContext::open(token_config);
  for (const std::string& warning : token_->warnings()) logger_.warn(warning);
  token_->require_kms_keys();
  // One line per change of the token's state, never one per failing request.
  token_->pool().on_health_change([this](bool up, const std::string& reason) {
    if (up) {
      logger_.warn("token recovered", {{"detail", reason}});
    } else {
      logger_.error("token down: recovery failed, re-initialisation backs off",
                    {{"error", reason}});
    }
  });
  token_->pool().on_recovery([this](const hsm::Error& error) {
    logger_.warn("token fault recovered",
                 {{"function", error.function()}, {"rv", hsm::rv_name(error.rv())}});
  });
  database_ = std::make_unique<tokens::KeyDatabase>(config.token.database);
  for (const std::string& warning : database_->warnings()) {
    logger_.error("database readable beyond the KMS user", {{"detail", warning}});
  }
  // Before serving anything: a token with other keys than the deployment's refuses to start.
  check_token_keys_at_start(*token_, config.token.database, config.server.node_name, logger_);
  keys_ = std::make_unique<tokens::KeyStore>(*token_, *database_, config.token.key_cache_size,
                                             config.token.media_key_cache_size);
  RegistryOptions registry_options;
  registry_options.replay_capacity = config.protocol.replay_cache_size;
  registry_options.node = config.server.node_name;  // this node's audit anchor
  registry_ = open_conference_registry(config.token.database, registry_options);
  // Before anything is recorded: the records a crash kept from the file but a committed
  // batch journaled are appended (they continue the chain, or kmsd does not start).
  if (const std::size_t restored = registry_->restore_audit_journal(*audit_); restored > 0) {
    logger_.warn(
        "audit log completed from the registry's journal",
        {{"records", std::to_string(restored)}, {"last_seq", std::to_string(audit_->last_seq())}});
  }
  ServiceConfig service_config;
  service_config.freshness_window_seconds = config.protocol.freshness_window.count();
  service_config.conference_lifetime_seconds = config.protocol.conference_ttl.count();
  key_requests_ = std::make_unique<TokenKeyRequestService>(*token_, *keys_, *registry_, *refusals_,
                                                           service_config);
  bridges_ =
      std::make_unique<TokenBridgeService>(*token_, *keys_, *registry_, *refusals_, service_config);

  metrics.add_renderer([this](std::string& out) {
    const hsm::PoolStats pool = token_->pool().stats();
    single_metric(out, "kms_session_pool_open", "gauge", "Open PKCS#11 sessions in the pool",
                  pool.open_sessions);
    single_metric(out, "kms_session_pool_in_use", "gauge", "Pool sessions lent out now",
                  pool.in_use);
    single_metric(out, "kms_session_pool_opened_total", "counter", "Sessions opened",
                  pool.sessions_opened);
    single_metric(out, "kms_session_pool_replaced_total", "counter",
                  "Sessions found dropped by the token and replaced", pool.sessions_replaced);
    single_metric(out, "kms_session_pool_handles_refound_total", "counter",
                  "Object handles re-found after CKR_OBJECT_HANDLE_INVALID", pool.handles_refound);
    single_metric(out, "kms_session_pool_relogins_total", "counter",
                  "Logins after CKR_USER_NOT_LOGGED_IN", pool.relogins);
    single_metric(out, "kms_session_pool_reinitializations_total", "counter",
                  "Module re-initialisations after a device error", pool.reinitializations);
    single_metric(out, "kms_session_pool_acquire_timeouts_total", "counter",
                  "Operations that found no free session in time", pool.acquire_timeouts);
    single_metric(out, "kms_session_pool_session_count_refusals_total", "counter",
                  "C_OpenSession answers CKR_SESSION_COUNT (waited for a session instead)",
                  pool.session_count_refusals);
    single_metric(out, "kms_session_pool_reinit_failures_total", "counter",
                  "Re-initialisations after which the token was still unusable",
                  pool.reinit_failures);
    single_metric(out, "kms_session_pool_reinit_suppressed_total", "counter",
                  "Re-initialisations refused by the circuit breaker's backoff",
                  pool.reinit_suppressed);
    single_metric(out, "kms_session_pool_recycles_total", "counter",
                  "Planned module re-initialisations (recycle_after_objects)", pool.recycles);
    single_metric(out, "kms_session_pool_recycles_abandoned_total", "counter",
                  "Recycles given up because operations in flight did not finish in time",
                  pool.recycles_abandoned);
    single_metric(out, "kms_session_pool_fresh_instance_failures_total", "counter",
                  "Recycles that could not load a fresh instance of the module (then in place)",
                  pool.fresh_instance_failures);
    single_metric(out, "kms_session_pool_longest_recycle_pause_microseconds", "gauge",
                  "Longest time operations were held back by one recycle",
                  pool.longest_recycle_pause_us);
    single_metric(out, "kms_token_objects_created_total", "counter",
                  "Objects created in the token through the module's sessions",
                  pool.objects_created);
    single_metric(out, "kms_token_oldest_call_milliseconds", "gauge",
                  "How long the longest token call now in progress has been running",
                  static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 hsm::oldest_call_in_flight())
                                                 .count()));
    single_metric(out, "kms_token_down", "gauge",
                  "1 while the circuit breaker is open (the last token recovery failed)",
                  pool.token_down ? 1 : 0);
    const tokens::KeyStoreStats keys = keys_->stats();
    single_metric(out, "kms_key_cache_hits_total", "counter", "Key store cache hits", keys.hits);
    single_metric(out, "kms_key_cache_misses_total", "counter", "Key store unwraps/lookups",
                  keys.misses);
    single_metric(out, "kms_key_cache_entries", "gauge",
                  "Identities whose keys are cached in the token", keys.cached);
    single_metric(out, "kms_key_cache_prewarmed_total", "counter",
                  "Cached keys made in a fresh module instance before a recycle switched to it",
                  keys.prewarmed);
    single_metric(out, "kms_key_cache_evictions_total", "counter",
                  "Unwrapped keys evicted from the cache (least recently used)", keys.evictions);
    const tokens::DerivedKeyCacheStats media = keys_->derived_keys().stats();
    single_metric(out, "kms_media_key_cache_hits_total", "counter",
                  "Media keys used again from the token instead of derived again", media.hits);
    single_metric(out, "kms_media_key_cache_misses_total", "counter",
                  "Media keys derived from the master key (then kept)", media.misses);
    single_metric(out, "kms_media_key_cache_evictions_total", "counter",
                  "Kept media keys destroyed to make room (least recently used)", media.evictions);
    single_metric(out, "kms_media_key_cache_entries", "gauge",
                  "Media keys kept in the token (token.media_key_cache_size at most)",
                  media.cached);
    single_metric(out, "kms_key_lookups_refused_total", "counter",
                  "Key lookups refused: unknown or revoked subscriber or bridge", keys.refused);
    single_metric(out, "kms_replay_entries", "gauge",
                  "Live entries of the replay record (used envelopes within their window)",
                  registry_->replay_fill());
    single_metric(out, "kms_replay_capacity", "gauge",
                  "Replay record capacity (protocol.replay_cache_size); full means overloaded",
                  registry_->replay_capacity());
    const GroupCommitStats commits = registry_->group_commit_stats();
    single_metric(out, "kms_group_commit_batches_total", "counter",
                  "Registry transactions (group commits) committed or attempted", commits.batches);
    single_metric(out, "kms_group_commit_writes_total", "counter",
                  "Admissions and bridge bindings written in those transactions", commits.writes);
    single_metric(out, "kms_group_commit_largest_batch", "gauge",
                  "Most writes one group commit has carried since start", commits.largest_batch);
    const RegistryCheckpointStats checkpoints = registry_->checkpoint_stats();
    single_metric(out, "kms_registry_checkpoints_total", "counter",
                  "SQLite WAL checkpoints run by the registry's checkpoint thread",
                  checkpoints.checkpoints);
    single_metric(out, "kms_registry_checkpoints_busy_total", "counter",
                  "SQLite WAL checkpoints skipped while a writer held a WAL lock (retried)",
                  checkpoints.busy);
    single_metric(out, "kms_registry_checkpoint_failures_total", "counter",
                  "SQLite WAL checkpoints that failed otherwise (retried at the next interval)",
                  checkpoints.failures);
    single_metric(out, "kms_registry_wal_pages", "gauge",
                  "Pages in the SQLite registry's WAL at its last checkpoint",
                  checkpoints.wal_pages);
    const audit::AuditLogStats audit = audit_->stats();
    single_metric(out, "kms_audit_records_total", "counter",
                  "Audit records written by this process", audit.records);
    single_metric(out, "kms_audit_failures_total", "counter",
                  "Audit records that could not be written", audit.failures);
    single_metric(out, "kms_audit_syncs_total", "counter", "fdatasync calls on the audit log",
                  audit.syncs);
    single_metric(out, "kms_audit_journals_total", "counter",
                  "Registry batches whose audit records were made durable by their COMMIT "
                  "(audit_journal) instead of an fdatasync of the file",
                  audit.journals);
    single_metric(out, "kms_audit_last_seq", "gauge",
                  "Sequence number of the last audit record (compare with kms-audit verify)",
                  audit_->last_seq());
    single_metric(out, "kms_audit_down", "gauge",
                  "1 while the audit log is failed (admissions and releases refused)", audit.down);
    single_metric(out, "kms_audit_recoveries_total", "counter",
                  "Times the audit log resumed by itself after a failure", audit.recoveries);
    single_metric(out, "kms_audit_segment", "gauge",
                  "Segment number of the live audit file (audit.rotate_*, SIGHUP)", audit.segment);
    single_metric(out, "kms_audit_rotations_total", "counter",
                  "Audit segments started by this process (rotation or SIGHUP reopen)",
                  audit.rotations);
    single_metric(out, "kms_audit_rotation_failures_total", "counter",
                  "Audit rotations that could not rename the live file (retried)",
                  audit.rotation_failures);
    const audit::RefusalSummaryStats refusals = refusals_->stats();
    single_metric(out, "kms_audit_unauthenticated_refusals_total", "counter",
                  "Refusals of unauthenticated requests (recorded one by one or summarized)",
                  refusals.refusals);
    single_metric(out, "kms_audit_refusals_summarized_total", "counter",
                  "Unauthenticated refusals counted into refusal_summary records",
                  refusals.summarized);
    single_metric(out, "kms_audit_refusal_summaries_total", "counter",
                  "refusal_summary records written", refusals.summaries);
  });

  purge_thread_ = std::thread([this] { purge_loop(); });
}

KmsBackend::~KmsBackend() {
  {
    std::lock_guard lock(purge_mutex_);
    stopping_ = true;
  }
  purge_wake_.notify_all();
  if (purge_thread_.joinable()) purge_thread_.join();
  flush_audit_journal();
  hsm::set_call_observer({});
}

Backend KmsBackend::backend() {
  Backend backend;
  backend.routes = routes();
  // logrotate-style tools move the file away and send SIGHUP: a new segment at the path.
  backend.reopen_logs = [this] {
    const audit::ReopenResult reopened = audit_->reopen();
    if (reopened.outcome == audit::ReopenResult::Outcome::reopened) {
      logger_.info("audit log reopened", {{"detail", reopened.detail}});
    } else if (reopened.outcome == audit::ReopenResult::Outcome::failed) {
      logger_.error("audit log reopen failed", {{"error", reopened.detail}});
    }
  };
  backend.oldest_token_call = [] { return hsm::oldest_call_in_flight(); };
  backend.token_sessions = token_->pool().config().max_sessions;
  return backend;
}

void KmsBackend::flush_audit_journal() {
  // A clean stop leaves the file synced and the journal empty of what it holds.
  try {
    audit_->sync_now();
    const std::optional<AuditHead> head = audit_->head();
    if (head && head->seq > pruned_seq_) {
      registry_->prune_audit_journal(*audit_, head->seq);
      pruned_seq_ = head->seq;
    }
  } catch (const std::exception& error) {
    logger_.warn("audit journal not pruned at stop (the next start does it)",
                 {{"error", error.what()}});
  }
}

void KmsBackend::purge_loop() {
  std::unique_lock lock(purge_mutex_);
  while (!purge_wake_.wait_for(lock, std::chrono::seconds(60), [this] { return stopping_; })) {
    lock.unlock();
    try {
      const std::size_t purged = registry_->purge_expired(tokens::unix_now());
      if (purged > 0)
        logger_.info("expired conferences purged", {{"count", std::to_string(purged)}});
    } catch (const std::exception& error) {
      logger_.warn("purging expired conferences failed", {{"error", error.what()}});
    }
    lock.lock();
  }
}

}  // namespace kms::server
