#include "admission_control.h"

#include <openssl/rand.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

namespace kms::server {

SourceId source_id(const boost::asio::ip::address& address) {
  namespace ip = boost::asio::ip;
  const auto v4 = [](const ip::address_v4& a) { return SourceId{a.to_uint(), 4}; };
  if (address.is_v4()) return v4(address.to_v4());
  const ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return v4(ip::make_address_v4(ip::v4_mapped, v6));
  const ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::uint64_t prefix = 0;
  for (std::size_t i = 0; i < 8; ++i) prefix = (prefix << 8) | bytes[i];
  return SourceId{prefix, 6};
}

AdmissionControl::AdmissionControl(const AdmissionSettings& settings, Metrics& metrics)
    : settings_(settings),
      in_flight_(metrics.pending_requests),
      seed_(0),
      mask_(std::bit_ceil(std::max(settings.tracked_sources, kProbe)) - 1),
      table_(settings.requests_per_second > 0 ? mask_ + 1 : 0) {
  // A per-process seed: nobody can pick addresses that fall into one probe window.
  RAND_bytes(reinterpret_cast<unsigned char*>(&seed_), sizeof seed_);
  metrics.add_renderer([this](std::string& out) {
    out +=
        "# HELP kms_admission_refusals_total Requests refused before the workers, by reason\n"
        "# TYPE kms_admission_refusals_total counter\n"
        "kms_admission_refusals_total{reason=\"rate_limited\"} " +
        std::to_string(rate_limited_.load()) +
        "\n"
        "kms_admission_refusals_total{reason=\"overloaded\"} " +
        std::to_string(overloaded_.load()) +
        "\n"
        "# HELP kms_admission_in_flight_limit Requests admitted to the workers at most\n"
        "# TYPE kms_admission_in_flight_limit gauge\n"
        "kms_admission_in_flight_limit " +
        std::to_string(settings_.max_in_flight) +
        "\n"
        "# HELP kms_admission_sources_evicted_total Rate-limit buckets reused for another "
        "source\n"
        "# TYPE kms_admission_sources_evicted_total counter\n"
        "kms_admission_sources_evicted_total " +
        std::to_string(evictions_.load()) + "\n";
  });
}

AdmissionControl::Decision AdmissionControl::admit(const SourceId& source, Clock::time_point now) {
  if (settings_.requests_per_second == 0) {
    if (!enter()) return {Verdict::overloaded, 1};
    return {};
  }
  std::lock_guard lock(mutex_);
  Bucket& bucket = slot_for(source, now);
  bucket.tokens = refilled_tokens(bucket, now);
  bucket.refilled = now;
  if (bucket.tokens < 1) {
    ++rate_limited_;
    // Whole seconds until its next request is allowed (Retry-After has no fractions).
    return {Verdict::rate_limited,
            static_cast<std::uint32_t>(
                std::max(1.0, std::ceil((1 - bucket.tokens) / settings_.requests_per_second)))};
  }
  // Refused for the bound, a request costs its source nothing.
  if (!enter()) return {Verdict::overloaded, 1};
  bucket.tokens -= 1;
  return {};
}

bool AdmissionControl::enter() {
  if (in_flight_.fetch_add(1) < static_cast<std::int64_t>(settings_.max_in_flight)) return true;
  --in_flight_;
  ++overloaded_;
  return false;
}

void AdmissionControl::release() { --in_flight_; }

double AdmissionControl::refilled_tokens(const Bucket& bucket, Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - bucket.refilled).count();
  return std::min<double>(settings_.burst,
                          bucket.tokens + std::max(0.0, elapsed) * settings_.requests_per_second);
}

// The source's slot among the kProbe from its hash: its own, else a free one, else one whose
// bucket is full again (indistinguishable from a new source's), else the least recently
// refilled (its source starts afresh when it returns: counted as an eviction).
AdmissionControl::Bucket& AdmissionControl::slot_for(const SourceId& source,
                                                     Clock::time_point now) {
  const std::uint64_t hash = ((source.value ^ seed_) + source.family) * 0x9e3779b97f4a7c15ull;
  const std::size_t start = static_cast<std::size_t>(hash >> 32);
  Bucket* victim = nullptr;
  int victim_rank = -1;  // 2: free, 1: full again, 0: oldest
  for (std::size_t i = 0; i < kProbe; ++i) {
    Bucket& bucket = table_[(start + i) & mask_];
    if (bucket.used && bucket.source == source) return bucket;
    const int rank = !bucket.used ? 2 : (refilled_tokens(bucket, now) >= settings_.burst ? 1 : 0);
    if (rank > victim_rank ||
        (rank == 0 && victim_rank == 0 && bucket.refilled < victim->refilled)) {
      victim = &bucket;
      victim_rank = rank;
    }
  }
  if (victim_rank == 0) ++evictions_;
  *victim = Bucket{source, true, static_cast<double>(settings_.burst), now};
  return *victim;
}

}  // namespace kms::server
