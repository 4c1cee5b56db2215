#include "kms/audit/refusal_summary.h"

#include <vector>

#include "kms/audit/audit_record.h"

namespace kms::audit {
namespace {

const std::string kOtherSources = "*";  // the key of sources beyond max_keys

std::string field(const AuditEvent& event, const char* name) {
  const auto it = event.fields.find(name);
  return it == event.fields.end() ? std::string() : it->second;
}

}  // namespace

std::string peer_address(const std::string& peer) {
  const auto colon = peer.rfind(':');
  if (colon == std::string::npos || colon == 0) return peer;
  return peer.substr(0, colon);
}

RefusalSummarizer::RefusalSummarizer(AuditSink& target, RefusalSummaryOptions options)
    : target_(target), options_(options) {
  if (options_.background) thread_ = std::thread([this] { run(); });
}

RefusalSummarizer::~RefusalSummarizer() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(stop_mutex_);
      stopping_ = true;
    }
    stop_wake_.notify_all();
    thread_.join();
  }
  flush();
}

void RefusalSummarizer::run() {
  std::unique_lock lock(stop_mutex_);
  while (!stop_wake_.wait_for(lock, options_.interval, [this] { return stopping_; })) {
    lock.unlock();
    flush();
    lock.lock();
  }
}

void RefusalSummarizer::unauthenticated_refusal(const AuditEvent& event, const std::string& peer) {
  std::lock_guard lock(mutex_);
  ++stats_.refusals;
  Key key{peer_address(peer), event.outcome};
  if (!buckets_.contains(key) && buckets_.size() >= options_.max_keys) {
    key = Key{kOtherSources, event.outcome};
  }
  auto [it, first] = buckets_.try_emplace(std::move(key));
  if (first) {
    try {
      target_.append(event);  // the interval's first for this key: in full, no sync
      appended_ = true;
      ++stats_.recorded;
      return;
    } catch (const std::exception&) {
      // The log is down: counted below, so the summary still tells.
    }
  }
  Bucket& bucket = it->second;
  const std::string now = utc_now_rfc3339();
  const std::string request_id = field(event, "request_id");
  if (bucket.count == 0) {
    bucket.operation = field(event, "operation");
    if (bucket.operation.empty()) bucket.operation = field(event, "endpoint");
    bucket.first_time = now;
    bucket.first_request_id = request_id;
  }
  ++bucket.count;
  bucket.last_time = now;
  bucket.last_request_id = request_id;
  ++stats_.summarized;
}

void RefusalSummarizer::flush() {
  std::lock_guard flush_lock(flush_mutex_);
  std::map<Key, Bucket> ended;
  bool need_sync = false;
  {
    std::lock_guard lock(mutex_);
    ended.swap(buckets_);
    need_sync = appended_;
    appended_ = false;
  }
  std::vector<std::pair<Key, Bucket>> kept;
  std::uint64_t written = 0;
  for (auto& [key, bucket] : ended) {
    if (bucket.count == 0) continue;
    AuditEvent summary{"refusal_summary",
                       key.second,
                       {{"source", key.first},
                        {"count", std::to_string(bucket.count)},
                        {"operation", bucket.operation},
                        {"first_time", bucket.first_time},
                        {"last_time", bucket.last_time},
                        {"first_request_id", bucket.first_request_id},
                        {"last_request_id", bucket.last_request_id},
                        {"interval_ms", std::to_string(options_.interval.count())}}};
    try {
      target_.append(summary);
      ++written;
      need_sync = true;
    } catch (const std::exception&) {
      kept.emplace_back(key, std::move(bucket));  // the log is down: try again next time
    }
  }
  bool synced = false;
  if (need_sync) {
    try {
      target_.sync();
      synced = true;
    } catch (const std::exception&) {
      // Best effort: the records are written; the log's next sync covers them.
    }
  }
  std::lock_guard lock(mutex_);
  stats_.summaries += written;
  if (synced) ++stats_.syncs;
  for (auto& [key, bucket] : kept) {
    Bucket& into = buckets_[key];  // may exceed max_keys by what was kept: bounded by it
    if (into.count == 0) {
      into = std::move(bucket);
    } else {
      into.count += bucket.count;
      into.first_time = bucket.first_time;
      into.first_request_id = bucket.first_request_id;
    }
  }
}

RefusalSummaryStats RefusalSummarizer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace kms::audit
