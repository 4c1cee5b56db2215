// The default kms::AuditSink: an append-only JSON-lines file, hash-chained, each record
// durable (fdatasync) before record() returns. Fails closed: any write or sync error throws
// kms::AuditUnavailable, and the log then refuses every later record (its tail is uncertain)
// until the process is restarted and resumes from what is on disk.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "kms/audit.h"

namespace kms::audit {

struct AuditLogStats {
  std::uint64_t records = 0;   // written by this process
  std::uint64_t failures = 0;  // record() calls that threw
  std::uint64_t syncs = 0;     // fdatasync calls (several records may share one)
};

class AuditLog : public AuditSink {
 public:
  // Opens (creates 0600) the file and resumes the chain from its last record. A torn last
  // line (a crash in the middle of a write, whose record() never returned) is cut off and
  // the cut is itself recorded. Throws AuditUnavailable if the file can't be opened or its
  // last complete record is not a valid record, or another process holds the log (an
  // exclusive flock is held while the log is open: one writer per chain).
  explicit AuditLog(std::string path);
  ~AuditLog() override;
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  void record(const AuditEvent& event) override;  // append + sync
  // Group commit for callers that batch: append() writes without waiting; sync() makes
  // every record appended so far durable with one fdatasync.
  void append(const AuditEvent& event) override;
  void sync() override;
  // The last durable record (what a sync covered), not the last appended one: an anchor
  // must never name a record a crash could still lose.
  std::optional<AuditHead> head() const override;

  const std::string& path() const noexcept { return path_; }
  std::uint64_t last_seq() const;
  std::string head_hash() const;
  AuditLogStats stats() const;

 private:
  void resume();
  std::uint64_t append_record(const AuditEvent& event);  // returns its seq
  void write_line(std::string line);                     // caller holds write_mutex_
  void sync_through(std::uint64_t seq);

  std::string path_;
  int fd_ = -1;
  bool regular_file_ = true;

  mutable std::mutex write_mutex_;  // guards seq_, head_, broken_, stats_.records/failures
  std::uint64_t seq_ = 0;
  std::string head_;
  bool broken_ = false;
  AuditLogStats stats_;

  mutable std::mutex sync_mutex_;  // one fdatasync at a time; covers every earlier write
  std::uint64_t synced_seq_ = 0;
  std::string synced_hash_;  // hash of record synced_seq_
};

}  // namespace kms::audit
