#include "kms/server/metrics.h"

#include <cstdio>

namespace kms::server {
namespace {

const std::vector<double> kRequestBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                            0.05,   0.1,   0.25,   0.5,   1,    2.5};
const std::vector<double> kTokenBounds = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                          0.001,   0.0025,   0.005,   0.01,   0.1};

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

}  // namespace

std::string label_value(std::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard lock(mutex_);
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  std::lock_guard lock(mutex_);
  const std::string prefix = labels.empty() ? "" : labels + ",";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{" + prefix + "le=\"" + number(bounds_[i]) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{" + prefix + "le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + number(sum_) + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

Metrics::Metrics() = default;

void Metrics::request_done(const std::string& endpoint, unsigned status, const std::string& outcome,
                           std::chrono::nanoseconds elapsed) {
  const std::string labels = "endpoint=" + label_value(endpoint) + ",status=\"" +
                             std::to_string(status) + "\",outcome=" + label_value(outcome);
  Histogram* histogram = nullptr;
  {
    std::lock_guard lock(mutex_);
    ++requests_[labels];
    auto& slot = request_latency_[endpoint];
    if (!slot) slot = std::make_unique<Histogram>(kRequestBounds);
    histogram = slot.get();
  }
  histogram->observe(std::chrono::duration<double>(elapsed).count());
}

void Metrics::pkcs11_call(const char* function, unsigned long rv,
                          std::chrono::nanoseconds elapsed) {
  Histogram* histogram = nullptr;
  {
    std::lock_guard lock(mutex_);
    ++pkcs11_calls_[function];
    if (rv != 0) {
      std::string code;
      if (rv_namer) {
        code = rv_namer(rv);
      } else {
        char hex[24];
        std::snprintf(hex, sizeof hex, "0x%08lX", rv);
        code = hex;
      }
      ++pkcs11_errors_["function=" + label_value(function) + ",rv=" + label_value(code)];
    }
    auto& slot = pkcs11_latency_[function];
    if (!slot) slot = std::make_unique<Histogram>(kTokenBounds);
    histogram = slot.get();
  }
  histogram->observe(std::chrono::duration<double>(elapsed).count());
}

void Metrics::add_renderer(Renderer renderer) {
  std::lock_guard lock(mutex_);
  renderers_.push_back(std::move(renderer));
}

std::string Metrics::render() const {
  std::string out;
  std::lock_guard lock(mutex_);
  header(out, "kms_http_requests_total", "counter",
         "HTTP requests by endpoint, status and outcome");
  for (const auto& [labels, count] : requests_) {
    out += "kms_http_requests_total{" + labels + "} " + std::to_string(count) + "\n";
  }
  header(out, "kms_http_request_duration_seconds", "histogram",
         "Request latency from the full request read to the response queued, by endpoint");
  for (const auto& [endpoint, histogram] : request_latency_) {
    histogram->render(out, "kms_http_request_duration_seconds",
                      "endpoint=" + label_value(endpoint));
  }
  header(out, "kms_pkcs11_calls_total", "counter", "PKCS#11 calls by function");
  for (const auto& [function, count] : pkcs11_calls_) {
    out += "kms_pkcs11_calls_total{function=" + label_value(function) + "} " +
           std::to_string(count) + "\n";
  }
  header(out, "kms_pkcs11_errors_total", "counter",
         "PKCS#11 calls that returned an error, by CK_RV");
  for (const auto& [labels, count] : pkcs11_errors_) {
    out += "kms_pkcs11_errors_total{" + labels + "} " + std::to_string(count) + "\n";
  }
  header(out, "kms_pkcs11_call_duration_seconds", "histogram", "PKCS#11 call latency by function");
  for (const auto& [function, histogram] : pkcs11_latency_) {
    histogram->render(out, "kms_pkcs11_call_duration_seconds", "function=" + label_value(function));
  }
  const auto gauge = [&out](const char* name, const char* type, const char* help, auto value) {
    header(out, name, type, help);
    out += std::string(name) + " " + std::to_string(value) + "\n";
  };
  gauge("kms_connections_open", "gauge", "Open client connections", connections_open.load());
  gauge("kms_connections_accepted_total", "counter", "Connections accepted",
        connections_accepted.load());
  gauge("kms_connections_rejected_total", "counter",
        "Connections closed at once: every connection in the way had completed its handshake",
        connections_rejected.load());
  gauge("kms_connections_rejected_per_source_total", "counter",
        "Of those, refused because their source had max_connections_per_source open",
        connections_rejected_per_source.load());
  gauge("kms_connections_handshaking", "gauge",
        "Open connections that have not completed their TLS handshake",
        connections_handshaking.load());
  gauge("kms_handshakes_evicted_total", "counter",
        "Connections closed during their TLS handshake to make room for a newer connection",
        handshakes_evicted.load());
  gauge("kms_tls_handshake_failures_total", "counter", "Failed TLS handshakes",
        tls_handshake_failures.load());
  gauge("kms_timeouts_total", "counter", "Connections closed by a handshake/read/write timeout",
        timeouts.load());
  gauge("kms_pending_requests", "gauge", "Requests queued or running on the worker pool",
        pending_requests.load());
  gauge("kms_certificate_reloads_total", "counter", "Successful certificate reloads (SIGHUP)",
        certificate_reloads.load());
  gauge("kms_certificate_reload_failures_total", "counter", "Failed certificate reloads",
        certificate_reload_failures.load());
  for (const auto& renderer : renderers_) renderer(out);
  return out;
}

}  // namespace kms::server
