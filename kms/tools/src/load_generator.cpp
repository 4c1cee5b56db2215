#include "load_generator.h"

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "kms/server/wire.h"

namespace kms::tools {
namespace {

using Clock = std::chrono::steady_clock;

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto index = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1));
  return sorted[index];
}

}  // namespace

std::string LoadReport::to_text() const {
  std::ostringstream out;
  out.precision(1);
  out << std::fixed << "requests ok " << ok << ", failed " << failed << " in " << seconds
      << " s: " << throughput() << " key requests/s; latency ms p50 " << p50_ms << " p90 " << p90_ms
      << " p99 " << p99_ms << " max " << max_ms;
  for (const auto& [code, count] : errors) out << "\n  error " << code << ": " << count;
  return out.str();
}

std::string LoadReport::to_json() const {
  // Fixed-point numbers (Boost.JSON would print doubles in exponent form).
  const auto fixed = [](double value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.3f", value);
    return std::string(buffer);
  };
  boost::json::object error_counts;
  for (const auto& [code, count] : errors) error_counts[code] = count;
  return "{\"ok\":" + std::to_string(ok) + ",\"failed\":" + std::to_string(failed) +
         ",\"seconds\":" + fixed(seconds) + ",\"throughput_per_s\":" + fixed(throughput()) +
         ",\"p50_ms\":" + fixed(p50_ms) + ",\"p90_ms\":" + fixed(p90_ms) +
         ",\"p99_ms\":" + fixed(p99_ms) + ",\"max_ms\":" + fixed(max_ms) +
         ",\"errors\":" + boost::json::serialize(error_counts) + "}";
}

LoadReport run_load(const LoadOptions& options) {
  if (!options.server.is_loopback()) {
    throw std::invalid_argument("the load generator only targets loopback servers");
  }
  const client::UeClient chair(options.chair_id, options.chair_key, options.chair_key_version,
                               options.profile);
  const client::UeClient responder(options.responder_id, options.responder_key,
                                   options.responder_key_version, options.profile);
  std::atomic<std::uint64_t> issued{0};
  std::mutex mutex;
  LoadReport report;
  std::vector<double> latencies;
  const auto start = Clock::now();
  const auto deadline = start + options.max_duration;

  const auto worker = [&] {
    std::vector<double> local_latencies;
    std::map<std::string, std::uint64_t> local_errors;
    std::uint64_t local_ok = 0;
    std::unique_ptr<HttpsClient> http;
    while (Clock::now() < deadline && issued.fetch_add(1) < options.max_requests) {
      const client::Secret r_a = client::UeClient::make_nonce();
      const client::Secret r_b = client::UeClient::make_nonce();
      KeyRequest request;
      request.chair_id = options.chair_id;
      request.responder_id = options.responder_id;
      request.chair_envelope = chair.chair_envelope(r_a, options.responder_id, options.suite);
      request.responder_envelope =
          responder.responder_envelope(r_b, options.chair_id, options.suite);
      const std::string body = wire::key_request_to_json(request);
      const auto sent = Clock::now();
      try {
        if (!http) http = std::make_unique<HttpsClient>(options.server, options.tls);
        const HttpResult result = http->post_json("/v1/key-request", body);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
        if (result.status != 200) {
          const auto error = wire::error_from_json(result.body);
          ++local_errors[error ? error->error : "http_" + std::to_string(result.status)];
          continue;
        }
        if (options.verify) {
          const KeyResponse response = wire::key_response_from_json(result.body);
          (void)chair.open_chair_response(response.chair_response, r_a, options.responder_id,
                                          options.suite);
          (void)responder.open_responder_response(response.responder_response, r_b,
                                                  options.chair_id, options.suite,
                                                  response.conference_id);
        }
        local_latencies.push_back(ms);
        ++local_ok;
      } catch (const TransportError&) {
        ++local_errors["transport"];
        http.reset();
      } catch (const std::exception&) {
        ++local_errors["bad_response"];
      }
    }
    std::lock_guard lock(mutex);
    report.ok += local_ok;
    for (const auto& [code, count] : local_errors) {
      report.errors[code] += count;
      report.failed += count;
    }
    latencies.insert(latencies.end(), local_latencies.begin(), local_latencies.end());
  };

  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options.concurrency); ++i) {
    threads.emplace_back(worker);
  }
  for (auto& thread : threads) thread.join();
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(latencies.begin(), latencies.end());
  report.p50_ms = percentile(latencies, 0.50);
  report.p90_ms = percentile(latencies, 0.90);
  report.p99_ms = percentile(latencies, 0.99);
  report.max_ms = latencies.empty() ? 0 : latencies.back();
  return report;
}

}  // namespace kms::tools
