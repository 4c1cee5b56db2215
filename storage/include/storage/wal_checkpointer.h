// Checkpoints an SQLite database in WAL mode from a thread of its own. SQLite's automatic
// checkpoint runs inside the COMMIT that makes the WAL cross 1,000 pages: that commit copies
// every page into the database file and fsyncs it while the writer waits, a pause of many
// milliseconds on whatever request made the commit. With a checkpointer the writer only
// appends to the WAL (Connection::on_wal_commit turns the automatic checkpoint off) and this
// thread copies the pages back, in PASSIVE mode: it never blocks the writer, and SQLite
// starts the WAL over from its beginning at the first commit after a complete checkpoint.
// Durability is SQLite's own: a committed transaction is in the fsynced WAL either way.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "storage/sqlite.h"

namespace storage::sqlite {

struct CheckpointerOptions {
  // A checkpoint at least this often while the WAL holds pages not yet copied back.
  std::chrono::milliseconds interval{1000};
  // A commit that leaves at least this many pages in the WAL wakes the thread at once
  // (bounds the WAL under a high write rate).
  int wake_at_pages = 1000;
};

struct CheckpointStats {
  std::uint64_t checkpoints = 0;  // checkpoints run on a WAL that held pages
  // Checkpoints skipped because a writer or another checkpoint held a WAL lock at that
  // moment (SQLITE_BUSY: PASSIVE mode never waits); retried at the next interval.
  std::uint64_t busy = 0;
  std::uint64_t failures = 0;        // checkpoints that failed otherwise (an I/O error, ...)
  std::int64_t last_wal_pages = 0;   // the WAL's pages at the last checkpoint
  std::int64_t last_pages_left = 0;  // of those, not copied back (a reader still needed them)
};

class WalCheckpointer {
 public:
  // Opens its own connection to `path` (synchronous as `open.sync_full` says: FULL fsyncs the
  // database file after copying) and starts the thread. Throws storage::Error(unavailable).
  WalCheckpointer(const std::string& path, const OpenOptions& open,
                  CheckpointerOptions options = {});
  // Stops the thread after one last checkpoint.
  ~WalCheckpointer();
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  // The writer's WAL hook (any thread, after a commit): records that there is work, and
  // wakes the thread when the WAL holds wake_at_pages or more.
  void committed(int wal_pages) noexcept;
  CheckpointStats stats() const;

 private:
  void run();
  void checkpoint();  // on the thread

  Connection connection_;
  const CheckpointerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool pending_ = false;  // a commit since the last checkpoint
  bool urgent_ = false;   // the WAL crossed wake_at_pages
  CheckpointStats stats_;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace storage::sqlite
