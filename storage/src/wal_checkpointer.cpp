#include "storage/wal_checkpointer.h"

#include <sqlite3.h>

namespace storage::sqlite {

WalCheckpointer::WalCheckpointer(const std::string& path, const OpenOptions& open,
                                 CheckpointerOptions options)
    : connection_(path, open), options_(options), thread_([this] { run(); }) {}

WalCheckpointer::~WalCheckpointer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void WalCheckpointer::committed(int wal_pages) noexcept {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
    if (wal_pages >= options_.wake_at_pages && !urgent_) urgent_ = wake = true;
  }
  if (wake) wake_.notify_one();
}

CheckpointStats WalCheckpointer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void WalCheckpointer::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait_for(lock, options_.interval, [this] { return stopping_ || urgent_; });
    const bool last = stopping_;
    if (pending_ || last) {
      pending_ = urgent_ = false;
      lock.unlock();
      checkpoint();
      lock.lock();
    }
    if (last) return;
  }
}

void WalCheckpointer::checkpoint() {
  int wal_pages = 0;
  int copied = 0;
  const int rc = sqlite3_wal_checkpoint_v2(connection_.handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                           &wal_pages, &copied);
  std::lock_guard lock(mutex_);
  if (rc != SQLITE_OK) {
    const int primary = rc & 0xff;
    ++(primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? stats_.busy : stats_.failures);
    pending_ = true;  // try again at the next interval
    return;
  }
  if (wal_pages <= 0) return;  // nothing in the WAL (or it was started over meanwhile)
  ++stats_.checkpoints;
  stats_.last_wal_pages = wal_pages;
  stats_.last_pages_left = wal_pages - copied;
  if (copied < wal_pages) pending_ = true;  // copy the rest at the next interval
}

}  // namespace storage::sqlite
