#include "kms/server/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "kms/server/heap_allocator.h"
#include "kms/version.h"

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

// Return codes that are answers, not failures: a size query's CKR_BUFFER_TOO_SMALL, and
// CKR_USER_ALREADY_LOGGED_IN for a login that finds the application logged in.
bool is_benign_rv(unsigned long rv) {
  constexpr unsigned long kOk = 0x0, kBufferTooSmall = 0x150, kAlreadyLoggedIn = 0x100;
  return rv == kOk || rv == kBufferTooSmall || rv == kAlreadyLoggedIn;
}

// The standard process_* families (as Prometheus client libraries export them), from /proc.
void render_process_metrics(std::string& out) {
  const long page = sysconf(_SC_PAGESIZE);
  const long ticks = sysconf(_SC_CLK_TCK);
  std::ifstream statm("/proc/self/statm");
  long size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes");
  out += "process_resident_memory_bytes " + std::to_string(resident_pages * page) + "\n";
  header(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes");
  out += "process_virtual_memory_bytes " + std::to_string(size_pages * page) + "\n";
  // /proc/self/stat after the command name: state is field 3, utime/stime 14/15,
  // starttime 22 (clock ticks since boot).
  std::ifstream stat_file("/proc/self/stat");
  const std::string stat((std::istreambuf_iterator<char>(stat_file)),
                         std::istreambuf_iterator<char>());
  const auto close_paren = stat.rfind(')');
  if (close_paren != std::string::npos && close_paren + 2 < stat.size() && ticks > 0) {
    std::istringstream fields(stat.substr(close_paren + 2));
    const std::vector<std::string> f((std::istream_iterator<std::string>(fields)),
                                     std::istream_iterator<std::string>());
    if (f.size() > 19) {
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(ticks);
      header(out, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds");
      out += "process_cpu_seconds_total " + number(cpu) + "\n";
      std::ifstream uptime_file("/proc/uptime");
      double uptime = 0;
      uptime_file >> uptime;
      const double started_ago = uptime - std::stod(f[19]) / static_cast<double>(ticks);
      const double now =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count();
      header(out, "process_start_time_seconds", "gauge", "Start time since the Unix epoch");
      out += "process_start_time_seconds " + number(std::floor(now - started_ago)) + "\n";
    }
  }
  std::size_t fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  header(out, "process_open_fds", "gauge", "Open file descriptors");
  out += "process_open_fds " + std::to_string(fds) + "\n";
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    header(out, "process_max_fds", "gauge", "Maximum open file descriptors (soft limit)");
    out += "process_max_fds " + std::to_string(limit.rlim_cur) + "\n";
  }
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
    if (!is_benign_rv(rv)) {
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
  std::unique_lock lock(mutex_);
  header(out, "kms_build_info", "gauge", "Always 1; the labels say which build runs");
  static const std::string malloc_name = heap_allocator().name;
  out += "kms_build_info{version=" + label_value(KMS_VERSION) +
         ",malloc=" + label_value(malloc_name) + "} 1\n";
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
  // One family with a single unlabelled sample; `type` is "counter" or "gauge".
  const auto single = [&out](const char* name, const char* type, const char* help, auto value) {
    header(out, name, type, help);
    out += std::string(name) + " " + std::to_string(value) + "\n";
  };
  single("kms_connections_open", "gauge", "Open client connections", connections_open.load());
  single("kms_connections_accepted_total", "counter", "Connections accepted",
         connections_accepted.load());
  single("kms_connections_rejected_total", "counter",
         "Connections closed at once: every connection in the way had completed its handshake",
         connections_rejected.load());
  single("kms_connections_rejected_per_source_total", "counter",
         "Of those, refused because their source had max_connections_per_source open",
         connections_rejected_per_source.load());
  single("kms_connections_handshaking", "gauge",
         "Open connections that have not completed their TLS handshake",
         connections_handshaking.load());
  single("kms_handshakes_evicted_total", "counter",
         "Connections closed during their TLS handshake to make room for a newer connection",
         handshakes_evicted.load());
  single("kms_tls_handshake_failures_total", "counter", "Failed TLS handshakes",
         tls_handshake_failures.load());
  single("kms_timeouts_total", "counter", "Connections closed by a handshake/read/write timeout",
         timeouts.load());
  single("kms_pending_requests", "gauge", "Requests queued or running on the worker pool",
         pending_requests.load());
  single("kms_certificate_reloads_total", "counter", "Successful certificate reloads (SIGHUP)",
         certificate_reloads.load());
  single("kms_certificate_reload_failures_total", "counter", "Failed certificate reloads",
         certificate_reload_failures.load());
  single("kms_token_stall_refusals_total", "counter",
         "Requests answered 503 at once because a token call ran past limits.token_stall",
         token_stall_refusals.load());
  // The renderers read other components under their locks (the session pool's, the
  // registry's). Never call them holding ours: token calls take ours inside the module's
  // call lock, which the pool takes inside its own (found by TSan: a lock-order cycle).
  const std::vector<Renderer> renderers = renderers_;
  lock.unlock();
  for (const auto& renderer : renderers) renderer(out);
  render_process_metrics(out);
  return out;
}

}  // namespace kms::server
