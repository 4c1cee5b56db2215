// Prometheus metrics (text exposition format 0.0.4). Counters and histograms keyed by a
// small, bounded label set (endpoints are the fixed routes, outcomes are ErrorCode names,
// PKCS#11 functions and CKR names are finite), so memory stays bounded.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kms::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines for `name` with `labels` ("a=\"b\"" or empty).
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<std::uint64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  void request_done(const std::string& endpoint, unsigned status, const std::string& outcome,
                    std::chrono::nanoseconds elapsed);
  void pkcs11_call(const char* function, unsigned long rv, std::chrono::nanoseconds elapsed);
  // Names CK_RV values in labels ("CKR_PIN_INCORRECT"); hex when unset. Set once at start.
  std::function<std::string(unsigned long)> rv_namer;

  // Admitted and not yet released or evicted: what limits.max_connections bounds (set by
  // ConnectionAdmission). An evicted connection's socket closes on its strand a moment
  // later; connection_objects counts those too (the drain waits for it).
  std::atomic<std::int64_t> connections_open{0};
  std::atomic<std::int64_t> connection_objects{0};
  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_rejected{0};  // closed at accept: no slot (any limit)
  std::atomic<std::uint64_t> connections_rejected_per_source{0};  // of them: the source's limit
  std::atomic<std::int64_t> connections_handshaking{0};  // open, TLS handshake not completed
  std::atomic<std::uint64_t> handshakes_evicted{0};      // closed to make room for a newer one
  std::atomic<std::uint64_t> tls_handshake_failures{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::int64_t> pending_requests{0};
  std::atomic<std::uint64_t> certificate_reloads{0};
  std::atomic<std::uint64_t> certificate_reload_failures{0};
  std::atomic<std::uint64_t> token_stall_refusals{0};  // 503 at once: a token call hangs

  // Extra lines rendered at the end (session pool, audit log): set once at start.
  using Renderer = std::function<void(std::string&)>;
  void add_renderer(Renderer renderer);

  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> requests_;                      // labels -> count
  std::map<std::string, std::unique_ptr<Histogram>> request_latency_;  // endpoint -> histogram
  std::map<std::string, std::uint64_t> pkcs11_calls_;                  // function -> count
  std::map<std::string, std::uint64_t> pkcs11_errors_;                 // function,rv -> count
  std::map<std::string, std::unique_ptr<Histogram>> pkcs11_latency_;   // function -> histogram
  std::vector<Renderer> renderers_;
};

// "a \"quoted\" value" escaping for label values.
std::string label_value(std::string_view value);

}  // namespace kms::server
