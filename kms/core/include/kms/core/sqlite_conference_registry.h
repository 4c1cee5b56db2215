// The default conference registry on SQLite (WAL, synchronous=FULL: an admission is
// durable when admit() returns). The file may be shared with the key store's tables; this
// registry only touches the tables conferences, conference_members and used_envelopes.
//
// Group commit: concurrent admit() and bind_for_release() calls queue up; whichever caller
// finds no commit in progress becomes the leader and commits the queue (at most max_batch
// writes) in one transaction: each write in its own SAVEPOINT, in arrival order (a write
// sees every earlier one, so a retransmission or replay within a batch is recognised), a
// write that fails (its checks or its audit append) rolled back alone, then one sync() per
// audit sink, one COMMIT, and every caller of the batch woken with its own result. If the
// audit sync or the COMMIT fails, every write of the batch that had not already failed on
// its own fails with that error and nothing of the batch is recorded (a write refused
// because of an earlier one in such a batch, e.g. a replay, stays refused: refusing is
// always safe). A caller alone commits at once (a batch of one); nobody waits for more.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "kms/core/conference_registry.h"

struct sqlite3;

namespace kms {

struct RegistryOptions {
  // Expired conferences stay this long (bridges get conference_expired rather than
  // unknown_conference), then purge_expired() deletes them.
  std::int64_t expired_retention_seconds = 3600;
  // Upper bound on live replay entries; beyond it admissions fail with overloaded rather
  // than forget an entry inside its window (which would reopen a replay).
  std::size_t replay_capacity = 1'000'000;
  int busy_timeout_ms = 5000;
  // true: synchronous=FULL, an admission survives power loss once admit() returns (one
  // fsync per admission bounds throughput by the disk's fsync latency). false:
  // synchronous=NORMAL, survives a process crash but the last admissions may be lost on
  // power loss (then their envelopes could be replayed within their window).
  bool sync_every_commit = true;
  // admit() and bind_for_release() also purge expired conferences when this long has
  // passed since the last purge (0: only explicit purge_expired() calls).
  std::int64_t purge_interval_seconds = 60;
  // Group commit: at most this many writes share one transaction (1: one transaction and
  // one fsync per write, as without group commit).
  std::size_t max_batch = 64;
};

struct GroupCommitStats {
  std::uint64_t batches = 0;  // transactions committed or attempted
  std::uint64_t writes = 0;   // admissions and bindings in them
  std::size_t largest_batch = 0;
};

class SqliteConferenceRegistry : public ConferenceRegistry {
 public:
  // Opens or creates the database file and the registry's tables. Throws
  // ProtocolError(internal_error) if the database can't be opened.
  explicit SqliteConferenceRegistry(std::string path, RegistryOptions options = {});
  ~SqliteConferenceRegistry() override;
  SqliteConferenceRegistry(const SqliteConferenceRegistry&) = delete;
  SqliteConferenceRegistry& operator=(const SqliteConferenceRegistry&) = delete;

  AdmissionOutcome admit(const Admission& admission, const AdmissionHook& before_commit,
                         AuditSink* audit = nullptr) override;
  std::optional<Conference> find(const Bytes& conference_id) override;
  Conference bind_for_release(const Bytes& conference_id, const std::string& bridge_id,
                              std::int64_t now, const ReleaseHook& before_commit,
                              AuditSink* audit = nullptr) override;
  std::size_t purge_expired(std::int64_t now) override;

  // Live replay entries (for tests: counts the table).
  std::size_t replay_entries();
  // The committed count the capacity check uses, without touching the database (metrics).
  std::size_t replay_fill() const noexcept { return replay_count_.load(); }
  std::size_t replay_capacity() const noexcept { return options_.replay_capacity; }
  const std::string& path() const noexcept { return path_; }

  // Group commit counters, and the writes waiting for a leader (for metrics and tests).
  GroupCommitStats group_commit_stats() const;
  std::size_t queued_writes() const;

 private:
  // One admission or binding waiting in the commit queue (lives on its caller's stack).
  struct Write {
    std::function<void()> apply;  // runs inside the batch transaction, under a savepoint
    AuditSink* audit = nullptr;   // synced before COMMIT if apply succeeded
    std::int64_t now = 0;         // the caller's clock (periodic purge)
    std::exception_ptr error;     // set when this write is not recorded
    bool done = false;            // guarded by queue_mutex_
  };
  void submit(Write& write);                            // returns when durable; rethrows error
  void commit_batch(const std::vector<Write*>& batch);  // leader only
  AdmissionOutcome apply_admission(const Admission& admission,
                                   const AdmissionHook& before_commit);  // holds mutex_
  std::optional<Conference> load(const Bytes& conference_id);            // caller holds mutex_
  std::size_t purge_locked(std::int64_t now);                            // caller holds mutex_
  void exec(const char* sql);
  std::string path_;
  RegistryOptions options_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;                          // the connection, replay counts and purge schedule
  std::atomic<std::size_t> replay_count_{0};  // committed (read without the lock by metrics)
  std::size_t pending_replay_count_ = 0;      // inside the open batch transaction
  std::int64_t next_purge_ = 0;

  mutable std::mutex queue_mutex_;  // the commit queue
  std::condition_variable queue_changed_;
  std::vector<Write*> queue_;
  bool leader_active_ = false;
  GroupCommitStats stats_;
};

}  // namespace kms
