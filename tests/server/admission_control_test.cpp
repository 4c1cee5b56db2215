// Admission control (docs/SERVER.md "Admission control") with an injected clock: the token
// bucket per source, the bound on requests in flight, the bounded table of sources.
#include "admission_control.h"

#include <gtest/gtest.h>

#include <boost/asio/ip/address.hpp>

namespace {

using kms::server::AdmissionControl;
using kms::server::AdmissionSettings;
using kms::server::Metrics;
using kms::server::SourceId;
using Verdict = AdmissionControl::Verdict;
using namespace std::chrono_literals;

const AdmissionControl::Clock::time_point t0 = AdmissionControl::Clock::time_point{} + 1h;

AdmissionSettings settings(std::uint32_t rate, std::uint32_t burst, std::size_t in_flight,
                           std::size_t sources = 64) {
  AdmissionSettings s;
  s.requests_per_second = rate;
  s.burst = burst;
  s.max_in_flight = in_flight;
  s.tracked_sources = sources;
  return s;
}

// Admits one request of `source` at `now` and ends it at once; its verdict.
Verdict once(AdmissionControl& control, const SourceId& source,
             AdmissionControl::Clock::time_point now) {
  const auto decision = control.admit(source, now);
  if (decision.verdict == Verdict::admitted) control.release();
  return decision.verdict;
}

bool renders(const Metrics& metrics, const std::string& line) {
  return metrics.render().find("\n" + line + "\n") != std::string::npos;
}

TEST(AdmissionControl, ASourceHasItsBurstThenItsRate) {
  Metrics metrics;
  AdmissionControl control(settings(2, 3, 100), metrics);
  const SourceId a{1, 4};
  for (int i = 0; i < 3; ++i) EXPECT_EQ(once(control, a, t0), Verdict::admitted) << i;
  const auto refused = control.admit(a, t0);
  EXPECT_EQ(refused.verdict, Verdict::rate_limited);
  EXPECT_EQ(refused.retry_after_seconds, 1u);  // one request per 0.5 s: rounded up to 1 s
  // Half a second refills one request, not two.
  EXPECT_EQ(once(control, a, t0 + 500ms), Verdict::admitted);
  EXPECT_EQ(once(control, a, t0 + 500ms), Verdict::rate_limited);
  // A long pause refills the burst, never more.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(once(control, a, t0 + 1h), Verdict::admitted) << i;
  EXPECT_EQ(once(control, a, t0 + 1h), Verdict::rate_limited);
  EXPECT_TRUE(renders(metrics, "kms_admission_refusals_total{reason=\"rate_limited\"} 3"));
  EXPECT_EQ(metrics.pending_requests.load(), 0);
}

TEST(AdmissionControl, OneSourceUsesUpOnlyItsOwnRate) {
  Metrics metrics;
  AdmissionControl control(settings(1, 2, 100), metrics);
  const SourceId flooder{0x7f000002, 4};
  for (int i = 0; i < 1000; ++i) once(control, flooder, t0);
  for (const SourceId other : {SourceId{0x7f000001, 4}, SourceId{0x7f000001, 6}}) {
    EXPECT_EQ(once(control, other, t0), Verdict::admitted);
    EXPECT_EQ(once(control, other, t0), Verdict::admitted);
    EXPECT_EQ(once(control, other, t0), Verdict::rate_limited);
  }
  EXPECT_TRUE(renders(metrics, "kms_admission_refusals_total{reason=\"rate_limited\"} 1000"));
}

TEST(AdmissionControl, TheBoundOnRequestsInFlightRefusesWithoutCostingAToken) {
  Metrics metrics;
  AdmissionControl control(settings(1, 3, 2), metrics);
  const SourceId a{1, 4};
  EXPECT_EQ(control.admit(a, t0).verdict, Verdict::admitted);
  EXPECT_EQ(control.admit(a, t0).verdict, Verdict::admitted);
  EXPECT_EQ(metrics.pending_requests.load(), 2);
  const auto refused = control.admit(a, t0);
  EXPECT_EQ(refused.verdict, Verdict::overloaded);
  EXPECT_EQ(refused.retry_after_seconds, 1u);
  EXPECT_EQ(metrics.pending_requests.load(), 2);
  control.release();
  // The overloaded refusal took no token: the third of the burst is still there.
  EXPECT_EQ(control.admit(a, t0).verdict, Verdict::admitted);
  control.release();
  control.release();
  EXPECT_EQ(metrics.pending_requests.load(), 0);
  EXPECT_EQ(once(control, a, t0), Verdict::rate_limited);
  EXPECT_TRUE(renders(metrics, "kms_admission_refusals_total{reason=\"overloaded\"} 1"));
  EXPECT_TRUE(renders(metrics, "kms_admission_in_flight_limit 2"));
}

TEST(AdmissionControl, MoreSourcesThanSlotsAreAllAdmitted) {
  Metrics metrics;
  AdmissionControl control(settings(1, 1, 100, 16), metrics);
  // 1000 sources that each used their burst: none is refused for want of a slot.
  for (std::uint64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(once(control, SourceId{i, 4}, t0), Verdict::admitted) << i;
  }
  EXPECT_FALSE(renders(metrics, "kms_admission_sources_evicted_total 0"));
  // A source that keeps its slot is still limited.
  const SourceId a{5000, 4};
  EXPECT_EQ(once(control, a, t0), Verdict::admitted);
  EXPECT_EQ(once(control, a, t0), Verdict::rate_limited);
}

TEST(AdmissionControl, RateZeroLimitsOnlyRequestsInFlight) {
  Metrics metrics;
  AdmissionControl control(settings(0, 1, 1), metrics);
  const SourceId a{1, 4};
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(once(control, a, t0), Verdict::admitted) << i;
  EXPECT_EQ(control.admit(a, t0).verdict, Verdict::admitted);
  EXPECT_EQ(control.admit(a, t0).verdict, Verdict::overloaded);
  control.release();
}

TEST(AdmissionControl, ASourceIsAnIpv4AddressOrAnIpv6SlashSixtyFour) {
  using boost::asio::ip::make_address;
  using kms::server::source_id;
  EXPECT_EQ(source_id(make_address("127.0.0.1")), source_id(make_address("::ffff:127.0.0.1")));
  EXPECT_NE(source_id(make_address("127.0.0.1")), source_id(make_address("127.0.0.2")));
  EXPECT_EQ(source_id(make_address("2001:db8:0:1::1")),
            source_id(make_address("2001:db8:0:1:ffff:ffff:ffff:ffff")));
  EXPECT_NE(source_id(make_address("2001:db8:0:1::1")), source_id(make_address("2001:db8:0:2::1")));
  // An IPv4 address and the IPv6 /64 with the same number are two sources.
  EXPECT_NE(source_id(make_address("0.0.0.1")), source_id(make_address("0:0:0:1::")));
}

}  // namespace
