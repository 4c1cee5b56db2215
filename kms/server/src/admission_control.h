// Admission of requests to the worker pool (docs/SERVER.md "Admission control"): a token
// bucket per source (429 rate_limited) and a bound on the requests in flight matched to the
// token's capacity (503 overloaded). Both answer at once, with Retry-After, instead of
// letting requests queue into unbounded latency. The bucket table has a fixed number of
// slots, allocated once: admit() takes one short lock and allocates nothing.
#pragma once

#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "kms/server/metrics.h"

namespace kms::server {

// A source as the limits count it (like source_key()): an IPv4 address (also IPv4-mapped),
// or the /64 an IPv6 address lies in. Compact and exact, for the bucket table.
struct SourceId {
  std::uint64_t value = 0;
  std::uint8_t family = 0;  // 4 or 6; 0: unknown
  bool operator==(const SourceId&) const = default;
};
SourceId source_id(const boost::asio::ip::address& address);

struct AdmissionSettings {
  std::uint32_t requests_per_second = 0;  // per source; 0: no rate limit
  std::uint32_t burst = 1;                // requests a source may send at once
  std::size_t max_in_flight = 1;          // requests queued or running on the workers
  std::size_t tracked_sources = 4096;     // bucket table slots (rounded up to a power of 2)
};

class AdmissionControl {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Verdict { admitted, rate_limited, overloaded };
  struct Decision {
    Verdict verdict = Verdict::admitted;
    std::uint32_t retry_after_seconds = 0;  // when refused
  };

  // `in_flight` is the count it keeps (the kms_pending_requests gauge); also renders the
  // kms_admission_* metrics through `metrics`.
  AdmissionControl(const AdmissionSettings& settings, Metrics& metrics);

  // A request that needs the workers arrives. Admitted: call release() when it is done.
  Decision admit(const SourceId& source, Clock::time_point now = Clock::now());
  void release();

  std::size_t max_in_flight() const { return settings_.max_in_flight; }

 private:
  struct Bucket {
    SourceId source;
    bool used = false;
    double tokens = 0;
    Clock::time_point refilled;
  };
  static constexpr std::size_t kProbe = 8;  // slots looked at per source

  bool enter();  // counts one more in flight, unless at the bound
  Bucket& slot_for(const SourceId& source, Clock::time_point now);
  double refilled_tokens(const Bucket& bucket, Clock::time_point now) const;

  const AdmissionSettings settings_;
  std::atomic<std::int64_t>& in_flight_;
  std::atomic<std::uint64_t> rate_limited_{0};
  std::atomic<std::uint64_t> overloaded_{0};
  std::atomic<std::uint64_t> evictions_{0};
  std::uint64_t seed_;
  std::size_t mask_;
  std::mutex mutex_;
  std::vector<Bucket> table_;
};

}  // namespace kms::server
