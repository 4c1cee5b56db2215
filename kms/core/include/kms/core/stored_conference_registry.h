// The conference registry on a database: SQLite (a file; the default) or PostgreSQL (shared
// by several kmsd nodes), chosen by the database URL (storage/database_url.h). The rules
// (replay, conference state, suite/profile, capacity, binding) are kms/core/src/
// admission_rules.*, the tables are behind a storage interface (src/registry_store.h); this
// class adds the group commit. An admission or a binding is durable, with its audit records,
// when admit() / bind_for_release() returns.
//
// Group commit: concurrent admit() and bind_for_release() calls queue up; whichever caller
// finds no commit in progress becomes the leader and commits the queue (at most max_batch
// writes) in one transaction: each write in its own SAVEPOINT, in arrival order (a write
// sees every earlier one, so a retransmission or replay within a batch is recognised), a
// write that fails (its checks or its audit append) rolled back alone, then per audit sink
// either its journal (the records it has not made durable yet, AuditSink::prepare_journal)
// stored in the same transaction, or, for a sink that does not journal, one sync(); one
// COMMIT, and every caller of the batch woken with its own result. With journaling sinks
// the COMMIT is the batch's one durable write. If the audit sync or the COMMIT fails, every write
// of the batch that had not already failed on its own fails with that error and nothing of the
// batch is recorded (a write refused because of an earlier one in such a batch, e.g. a replay,
// stays refused: refusing is always safe). A caller alone commits at once (a batch of one); nobody
// waits for more.
//
// Several nodes (PostgreSQL): each write locks its conference row first, so admissions and
// bindings of one conference are serialised across nodes; the primary keys of conferences
// and used envelopes make a race for the same conference or envelope end in one winner (the
// loser's write is rolled back to its savepoint and applied again, then seeing the winner's
// commit: a replay, a retransmission or a bound conference).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kms/core/conference_registry.h"
#include "kms/core/recent_envelopes.h"

namespace kms {

struct RegistryOptions {
  // Expired conferences stay this long (bridges get conference_expired rather than
  // unknown_conference), then purge_expired() deletes them.
  std::int64_t expired_retention_seconds = 3600;
  // Upper bound on live replay entries; beyond it admissions fail with overloaded rather
  // than forget an entry inside its window (which would reopen a replay). With several
  // nodes each counts its own writes between purges (the count is re-read then): a bound on
  // the table's size, not a safety property (the primary key is).
  std::size_t replay_capacity = 1'000'000;
  int busy_timeout_ms = 5000;
  // SQLite. true: synchronous=FULL, an admission survives power loss once admit() returns
  // (one fsync per commit). false: synchronous=NORMAL, survives a process crash but the last
  // admissions may be lost on power loss (then their envelopes could be replayed within
  // their window). PostgreSQL commits durably as the server's synchronous_commit says (on
  // by default: the commit record is flushed before COMMIT returns). A journaling audit
  // sink's records of a batch are exactly as durable as its COMMIT.
  bool sync_every_commit = true;
  // admit() and bind_for_release() also purge expired conferences when this long has
  // passed since the last purge (0: only explicit purge_expired() calls).
  std::int64_t purge_interval_seconds = 60;
  // Group commit: at most this many writes share one transaction (1: one transaction and
  // one fsync per write, as without group commit).
  std::size_t max_batch = 64;
  // PostgreSQL: this node's name for its audit anchor row (several nodes, several logs).
  std::string node = "kmsd";
  // Envelopes admitted lately, remembered in memory so that a replay of one is refused
  // before any token work (about 200 bytes each; 0: none).
  std::size_t recent_envelopes = 65'536;
  // SQLite: a thread of the registry's own checkpoints the WAL at least this often, so no
  // COMMIT copies pages into the database file on a request's time (storage/wal_checkpointer.h;
  // 0: SQLite's automatic checkpoint in the committing thread, as SQLite does by default).
  int checkpoint_interval_ms = 1000;
};

// The SQLite registry's WAL checkpoints (all zero for PostgreSQL, or with the automatic
// checkpoint of SQLite).
struct RegistryCheckpointStats {
  std::uint64_t checkpoints = 0;
  std::uint64_t busy = 0;  // skipped while a writer held a WAL lock (retried)
  std::uint64_t failures = 0;
  std::int64_t wal_pages = 0;  // the WAL's pages at the last checkpoint
};

struct GroupCommitStats {
  std::uint64_t batches = 0;  // transactions committed or attempted
  std::uint64_t writes = 0;   // admissions and bindings in them
  std::size_t largest_batch = 0;
  std::uint64_t audit_syncs = 0;     // AuditSink::sync() calls before a COMMIT
  std::uint64_t audit_journals = 0;  // audit journals stored in a COMMIT instead
};

class RegistryStore;
class RegistryBatch;

class StoredConferenceRegistry : public ConferenceRegistry {
 public:
  StoredConferenceRegistry(std::unique_ptr<RegistryStore> store, RegistryOptions options);
  ~StoredConferenceRegistry() override;
  StoredConferenceRegistry(const StoredConferenceRegistry&) = delete;
  StoredConferenceRegistry& operator=(const StoredConferenceRegistry&) = delete;

  AdmissionOutcome admit(const Admission& admission, const AdmissionHook& before_commit,
                         AuditSink* audit = nullptr) override;
  std::optional<Conference> find(const Bytes& conference_id) override;
  Conference bind_for_release(const Bytes& conference_id, const std::string& bridge_id,
                              std::int64_t now, const ReleaseHook& before_commit,
                              AuditSink* audit = nullptr) override;
  std::size_t purge_expired(std::int64_t now) override;
  std::optional<Bytes> recent_envelope_use(const Bytes& envelope_digest) const override;

  // Live replay entries (counts the table; also resets the capacity count to it).
  std::size_t replay_entries();
  // The committed count the capacity check uses, without touching the database (metrics).
  std::size_t replay_fill() const noexcept { return replay_count_.load(); }
  std::size_t replay_capacity() const noexcept { return options_.replay_capacity; }
  // The SQLite path or the PostgreSQL URL (without password parameters).
  const std::string& path() const noexcept { return description_; }

  // Group commit counters, and the writes waiting for a leader (for metrics and tests).
  GroupCommitStats group_commit_stats() const;
  RegistryCheckpointStats checkpoint_stats() const;

  // At start, before anything is recorded: hands this node's audit journal rows of the
  // sink's log (AuditSink::journal_log(); nothing for a sink that journals nothing) to the sink
  // (AuditSink::restore_from_journal: it appends those its file lacks), then deletes the
  // rows its file has made durable. Returns how many rows were beyond the sink's durable
  // head before (0: nothing to restore). Throws AuditUnavailable (the rows do not continue
  // the file) or ProtocolError (database).
  std::size_t restore_audit_journal(AuditSink& audit);
  // A clean stop: the sink's file is synced by the caller; deletes its journal rows up to
  // `synced_seq`.
  void prune_audit_journal(const AuditSink& audit, std::uint64_t synced_seq);
  std::size_t queued_writes() const;

 private:
  // One admission or binding waiting in the commit queue (lives on its caller's stack).
  struct Write {
    std::function<void(RegistryBatch&)> apply;  // inside the batch transaction, a savepoint
    AuditSink* audit = nullptr;                 // synced before COMMIT if apply succeeded
    std::int64_t now = 0;                       // the caller's clock (periodic purge)
    bool hook_called = false;                   // its audit records appended: never re-applied
    const Admission* admitted = nullptr;        // its envelopes, remembered after COMMIT
    std::exception_ptr error;                   // set when this write is not recorded
    bool done = false;                          // guarded by queue_mutex_
  };
  void submit(Write& write);                            // returns when durable; rethrows error
  void commit_batch(const std::vector<Write*>& batch);  // leader only
  void apply_with_retries(RegistryBatch& batch, Write& write);
  AdmissionOutcome apply_admission(RegistryBatch& batch, const Admission& admission,
                                   const AdmissionHook& before_commit, Write& write);
  std::size_t purge_locked(std::int64_t now);

  std::unique_ptr<RegistryStore> store_;
  RecentEnvelopes recent_;
  RegistryOptions options_;
  std::string description_;
  std::mutex mutex_;                          // purges and the capacity count
  std::atomic<std::size_t> replay_count_{0};  // committed (read without the lock by metrics)
  std::size_t pending_replay_count_ = 0;      // inside the open batch transaction
  std::int64_t next_purge_ = 0;

  mutable std::mutex queue_mutex_;  // the commit queue
  std::condition_variable queue_changed_;
  std::vector<Write*> queue_;
  bool leader_active_ = false;
  GroupCommitStats stats_;
};

// The registry named by a database URL (sqlite:PATH, postgresql://...) or a plain SQLite
// path. Creates or upgrades the tables (PostgreSQL: unless migrate=check). Throws
// ProtocolError(internal_error) naming the database and the reason (unreachable server,
// refused login, schema older or newer than this build, bad URL).
std::unique_ptr<StoredConferenceRegistry> open_conference_registry(const std::string& database,
                                                                   RegistryOptions options = {});

}  // namespace kms
