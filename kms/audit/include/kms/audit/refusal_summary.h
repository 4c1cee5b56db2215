// A bounded audit cost for refusals that nothing authenticated (docs/SERVER.md, "Audit
// log"): a kms::AuditSink in front of another (the AuditLog) that passes everything through
// except AuditSink::unauthenticated_refusal(). Of those, per interval and per (source
// address, error code), the first is written as the ordinary "refusal" record and the rest
// are counted; when the interval ends, each key with a count gets one "refusal_summary"
// record:
//   {"event":"refusal_summary","outcome":"<code>","fields":{"count":"N","source":"ADDR",
//    "operation":"key_request","first_time":"...","last_time":"...",
//    "first_request_id":"...","last_request_id":"...","interval_ms":"10000"}}
// N counts the refusals not recorded one by one (first_* and last_* describe them). None of
// these records has an fdatasync of its own: they are appended, and made durable by the next
// sync of the log (the group commit of admissions and releases) or by the one sync this
// class makes at the end of an interval in which it appended anything. So N bogus requests
// cost at most 2 records per (source, code) and one sync per interval, whatever N is.
// More than max_keys distinct keys in one interval: the rest are counted under source "*".
// A summary the log cannot take (AuditUnavailable) is kept and written at a later interval.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "kms/audit.h"

namespace kms::audit {

struct RefusalSummaryOptions {
  std::chrono::milliseconds interval{10000};
  std::size_t max_keys = 1024;
  bool background = true;  // a thread ends each interval; false: only flush() does (tests)
};

struct RefusalSummaryStats {
  std::uint64_t refusals = 0;    // unauthenticated refusals seen
  std::uint64_t recorded = 0;    // of them written as their own "refusal" record
  std::uint64_t summarized = 0;  // of them counted into a summary
  std::uint64_t summaries = 0;   // "refusal_summary" records written
  std::uint64_t syncs = 0;       // syncs made at the end of an interval
};

// "127.0.0.1:5000" -> "127.0.0.1", "::1:5000" -> "::1" (RequestContext::peer).
std::string peer_address(const std::string& peer);

class RefusalSummarizer : public AuditSink {
 public:
  RefusalSummarizer(AuditSink& target, RefusalSummaryOptions options = {});
  ~RefusalSummarizer() override;  // ends the current interval (flush)
  RefusalSummarizer(const RefusalSummarizer&) = delete;
  RefusalSummarizer& operator=(const RefusalSummarizer&) = delete;

  void record(const AuditEvent& event) override { target_.record(event); }
  void append(const AuditEvent& event) override { target_.append(event); }
  void sync() override { target_.sync(); }
  std::optional<AuditHead> head() const override { return target_.head(); }
  std::optional<AuditJournal> prepare_journal() override { return target_.prepare_journal(); }
  std::string journal_log() const override { return target_.journal_log(); }
  void journal_committed(const AuditJournal& journal) override {
    target_.journal_committed(journal);
  }
  std::uint64_t restore_from_journal(const std::vector<AuditJournalLine>& rows) override {
    return target_.restore_from_journal(rows);
  }
  // Never throws.
  void unauthenticated_refusal(const AuditEvent& event, const std::string& peer) override;

  // Ends the current interval: writes its summaries, then syncs once if anything was
  // appended during it. Called by the background thread at every interval.
  void flush();
  RefusalSummaryStats stats() const;

 private:
  struct Bucket {
    std::uint64_t count = 0;  // refusals not recorded one by one
    std::string operation;
    std::string first_time, last_time;
    std::string first_request_id, last_request_id;
  };
  using Key = std::pair<std::string, std::string>;  // source address, error code

  void run();

  AuditSink& target_;
  RefusalSummaryOptions options_;
  mutable std::mutex mutex_;
  std::map<Key, Bucket> buckets_;  // this interval's keys
  bool appended_ = false;          // a refusal record was appended in this interval
  RefusalSummaryStats stats_;
  std::mutex flush_mutex_;  // one flush at a time

  std::mutex stop_mutex_;
  std::condition_variable stop_wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace kms::audit
