// The default kms::AuditSink: an append-only JSON-lines file, hash-chained, each record
// durable (fdatasync) before record() returns. Fails closed: a write or sync error throws
// kms::AuditUnavailable, and the log then refuses every record (the failing one is never
// written later: its caller has refused its operation) until it has resumed. Resuming is a
// bounded retry: at most once per retry interval, the next call (or probe()) re-reads the
// file's tail, cuts a torn last line, checks that every synced record is still there,
// resumes the chain from the last complete record and writes an "audit_recovered" record
// naming the failure, durable before anything else is recorded.
// Segments (audit_segment.h): by size or age the live file is renamed to the next
// "<path>.NNNNNN" and a new live file starts with a header record that continues the chain;
// reopen() (kmsd: SIGHUP) starts a new segment at the path when the file there is not the
// one being written (logrotate moved it away).
// Journaled (sync_interval > 0, kmsd's default): a registry batch takes the records not yet
// durable with prepare_journal() and stores them in its own COMMIT (table audit_journal),
// the one durable write of the batch; a background thread fdatasyncs the file every
// sync_interval, and the next batch deletes the journal rows the file has made durable. At
// start restore_from_journal() appends the rows a crash kept from the file.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kms/audit.h"

namespace kms::audit {

struct AuditLogStats {
  std::uint64_t records = 0;            // written by this process
  std::uint64_t failures = 0;           // record(), append() and sync() calls that threw
  std::uint64_t syncs = 0;              // fdatasync calls (several records may share one)
  std::uint64_t recoveries = 0;         // times the log resumed after a failure
  std::uint64_t rotations = 0;          // segments started by this process (rotation or reopen)
  std::uint64_t rotation_failures = 0;  // rotations that could not rename the live file
  std::uint64_t journals = 0;           // journals a committed registry batch stored
  std::uint64_t restored = 0;           // records appended from the registry's journal at start
  std::uint64_t segment = 1;            // the live file's segment number
  bool down = false;                    // failed and not resumed yet
};

struct AuditLogOptions {
  // After a failure: how long every call is refused at once before the next one tries to
  // resume the log (0: the very next call tries).
  std::chrono::milliseconds retry_interval{1000};
  // Resuming also needs this much free space on the log's filesystem (statvfs f_bavail), so
  // that a log at the edge of a full disk does not flap between failed and resumed.
  std::uint64_t resume_free_bytes = 64 * 1024;
  // Rotation (0: off). Checked before each record: a live file holding at least
  // rotate_bytes, or whose first record is rotate_age old, is rotated first (a file with no
  // record beyond its header is never rotated). A failed rename is retried after
  // retry_interval; the records go on in the live file meanwhile.
  std::uint64_t rotate_bytes = 0;
  std::chrono::seconds rotate_age{0};
  // The clock of rotate_age and of the records' "time" (tests set a fake one).
  std::function<std::chrono::system_clock::time_point()> clock;
  // Journaled mode (0: off, every registry batch waits for an fdatasync of the file before
  // its COMMIT): a registry batch's records are durable with its COMMIT (prepare_journal),
  // and a background thread fdatasyncs the file this often when it holds journaled records
  // not yet synced (so that their rows can go). record() still syncs at once.
  std::chrono::milliseconds sync_interval{0};
};

// What reopen() did.
struct ReopenResult {
  enum class Outcome { unchanged, reopened, failed } outcome = Outcome::unchanged;
  std::string detail;
};

class AuditLog : public AuditSink {
 public:
  // Opens (creates 0600) the file and resumes the chain from its last record. A torn last
  // line (a crash in the middle of a write, whose record() never returned) is cut off and
  // the cut is itself recorded. Throws AuditUnavailable if the file can't be opened or its
  // last complete record is not a valid record, or another process holds the log (an
  // exclusive flock is held while the log is open: one writer per chain).
  // A new (empty) live file continues the chain of the newest segment beside it (the
  // rotated "<path>.NNNNNN", or another "<file name>.*" / "<file name>-*" file whose last
  // line is a record: logrotate's names) with a header record.
  explicit AuditLog(std::string path, AuditLogOptions options = {});
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
  // Journaled mode only (nullopt otherwise): see kms::AuditSink. Never waits for an
  // fdatasync in progress.
  std::optional<AuditJournal> prepare_journal() override;
  std::string journal_log() const override;  // the absolute path (empty: not journaling)
  void journal_committed(const AuditJournal& journal) override;
  // Appends the rows beyond the file's last record, each checked to continue the chain (seq,
  // prev, its own hash), then fdatasyncs; a row the file already holds at its last seq must
  // carry the file's hash. Call before anything else is recorded. Throws AuditUnavailable.
  std::uint64_t restore_from_journal(const std::vector<AuditJournalLine>& rows) override;
  // Makes every record written so far durable now (the background thread's job; tests and
  // a clean stop call it). Throws AuditUnavailable.
  void sync_now();

  // Whether the log takes records now; a failed log first tries to resume (within the retry
  // interval). For readiness probes: a refused probe does not count as a failure.
  bool probe();
  // Called when the log fails (up = false, what failed) and when it has resumed (up = true),
  // with the log's locks held: the callback must not call into the log.
  void on_health_change(std::function<void(bool up, const std::string& detail)> callback);

  // Rotates now (size and age aside): syncs the live file, renames it to the next
  // "<path>.NNNNNN" (never over an existing file), fsyncs the directory, and starts a new
  // live file with a durable header record. Returns the rotated file's name. Throws
  // AuditUnavailable (the log is then failed if the new live file could not be started).
  std::string rotate();
  // For logrotate-style tools (kmsd: SIGHUP): when `path` no longer names the file being
  // written (moved away; missing, or a new empty file made by logrotate's `create`), syncs
  // the old file and starts a new segment at `path` whose header continues the chain. A
  // file at `path` that already holds records is not taken (failed: the records go on in
  // the old file). Never throws.
  ReopenResult reopen();

  const std::string& path() const noexcept { return path_; }
  std::uint64_t last_seq() const;
  std::string head_hash() const;
  AuditLogStats stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Tail {
    std::uint64_t seq = 0;  // of the last complete record (0: empty file)
    std::string hash;       // its hash
    std::uint64_t torn_bytes = 0;
    std::optional<std::string> hash_of_synced;  // hash of record synced_seq_, if in the tail
  };

  Tail read_tail();  // cuts a torn last line; throws AuditUnavailable
  void resume();
  // The live file's segment, from its first line; for an empty live file, the newest
  // segment beside it to continue from (then the header is pending). Sets segment_*.
  void find_segment();
  std::chrono::system_clock::time_point now() const;
  bool rotation_due() const;  // caller holds write_mutex_
  void maybe_rotate();
  // The rest: caller holds sync_mutex_ and write_mutex_.
  std::string rotate_locked(std::string_view reason);
  // Makes every record written durable, so the old file needs no later sync.
  void sync_all_locked();
  // Takes `fd` (an empty file at path_, locked) as the live file of the next segment.
  void adopt_live_file(int fd);
  // adopt_live_file, then the header; a failure there fails the log (header pending).
  void start_segment(int fd);
  void write_header_locked();  // header record of segment_, durable; throws
  struct LiveFile {
    int fd = -1;
    bool regular = true;
  };
  // Opens path_ (creates it 0600 when missing; with create_exclusive, only a new file) and
  // locks it (one writer per log). Throws AuditUnavailable.
  LiveFile open_live_file(bool create_exclusive) const;
  std::uint64_t append_record(const AuditEvent& event);  // returns its seq
  // Formats, writes and tracks one record; returns its seq. Caller holds write_mutex_.
  std::uint64_t write_event_locked(const AuditEvent& event);
  void write_line(std::string line);  // caller holds write_mutex_
  // A record written (line without newline): kept for the journal until synced.
  void track_written_locked(std::uint64_t seq, const std::string& hash, std::string line);
  // Every record through `seq` is durable in the file. Caller holds both mutexes.
  void note_synced_locked(std::uint64_t seq, const std::string& hash);
  // Journaled mode, resuming after a failure: writes the journaled records the file lost.
  void rewrite_journaled_locked();
  void background_sync_loop();
  void sync_through(std::uint64_t seq);
  void mark_failed(const std::string& what);  // caller holds write_mutex_
  // Throws AuditUnavailable while the log is failed and cannot resume yet.
  void ensure_writable(bool count_refusal);
  void resume_after_failure();  // caller holds sync_mutex_ and write_mutex_

  std::string path_;
  AuditLogOptions options_;
  int fd_ = -1;
  bool regular_file_ = true;

  // The live file's segment (guarded by write_mutex_): its number, the chain head before its
  // first record (seq 0 / genesis for segment 1), its size and when its first record was
  // written. header_pending_: the header of a new segment is not in the file yet (a failed
  // rotation or reopen; resuming writes it first). new_file_pending_: the live file was
  // renamed away but no new one could be opened yet.
  std::uint64_t segment_ = 1;
  AuditHead segment_base_{0, std::string()};
  std::uint64_t segment_bytes_ = 0;
  std::chrono::system_clock::time_point segment_started_{};
  bool header_pending_ = false;
  bool new_file_pending_ = false;
  std::string pending_reason_ = "start";  // the pending header's "reason"
  Clock::time_point next_rotation_attempt_{};

  // Guards seq_, head_, the failure state and stats_ (except syncs, see sync_mutex_).
  mutable std::mutex write_mutex_;
  std::uint64_t seq_ = 0;
  std::string head_;
  bool broken_ = false;
  std::string failure_;                // what failed first in this outage
  std::string failed_at_;              // when (RFC 3339)
  std::uint64_t outage_refusals_ = 0;  // calls refused since (the failing one included)
  Clock::time_point next_retry_{};
  std::function<void(bool, const std::string&)> on_health_change_;
  AuditLogStats stats_;

  // One fdatasync at a time; covers every earlier write. Taken before write_mutex_.
  mutable std::mutex sync_mutex_;
  std::uint64_t synced_seq_ = 0;
  std::string synced_hash_;  // hash of record synced_seq_

  // Journaled mode (guarded by write_mutex_): the records written and not yet synced (seq
  // order), the last record a committed batch journaled, a copy of synced_seq_/synced_hash_
  // readable without waiting for an fdatasync, and a torn-tail note held back at open until
  // the journal is restored (it would take a seq the journal's rows may hold).
  bool journaling_ = false;  // sync_interval > 0 and a regular file
  std::string journal_log_;
  std::deque<AuditJournalLine> unsynced_;
  AuditHead journaled_{0, std::string()};
  AuditHead file_synced_{0, std::string()};
  std::uint64_t pending_torn_bytes_ = 0;

  std::mutex thread_mutex_;
  std::condition_variable thread_wake_;
  bool stopping_ = false;
  std::thread sync_thread_;
};

}  // namespace kms::audit
