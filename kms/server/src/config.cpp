#include "kms/server/config.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <toml++/toml.h>

#include <cstdio>
#include <set>

#include "storage/database_url.h"
#include "tokens/token_config_toml.h"

namespace kms::server {
namespace {

namespace fs = std::filesystem;

struct Parser {
  const toml::table& root;
  fs::path base;
  std::vector<std::string>& problems;

  const toml::table* table(std::string_view name, const std::set<std::string_view>& keys) {
    const toml::node* node = root.get(name);
    if (!node) return nullptr;
    const toml::table* t = node->as_table();
    if (!t) {
      problems.push_back("[" + std::string(name) + "] must be a table");
      return nullptr;
    }
    for (const auto& [key, value] : *t) {
      if (!keys.contains(key.str())) {
        problems.push_back("[" + std::string(name) + "] unknown key \"" + std::string(key.str()) +
                           "\" (known: " + join(keys) + ")");
      }
    }
    return t;
  }

  static std::string join(const std::set<std::string_view>& keys) {
    std::string out;
    for (auto key : keys) out += (out.empty() ? "" : ", ") + std::string(key);
    return out;
  }

  template <class T>
  std::optional<T> get(const toml::table* t, std::string_view table_name, std::string_view key,
                       std::string_view expected) {
    if (!t) return std::nullopt;
    const toml::node* node = t->get(key);
    if (!node) return std::nullopt;
    // value_exact: no conversions (toml++'s value<int64_t>() would take 1e3 or 300.0).
    if (auto value = node->value_exact<T>()) return value;
    problems.push_back(std::string(table_name) + "." + std::string(key) + " must be " +
                       std::string(expected));
    return std::nullopt;
  }

  void size(const toml::table* t, std::string_view table_name, std::string_view key,
            std::size_t& out, std::int64_t min, std::int64_t max) {
    if (auto v = get<std::int64_t>(t, table_name, key, "an integer")) {
      if (*v < min || *v > max) {
        problems.push_back(std::string(table_name) + "." + std::string(key) + " = " +
                           std::to_string(*v) + " is out of range [" + std::to_string(min) + ", " +
                           std::to_string(max) + "]");
      } else {
        out = static_cast<std::size_t>(*v);
      }
    }
  }

  template <class Duration>
  void duration(const toml::table* t, std::string_view table_name, std::string_view key,
                Duration& out, std::int64_t min, std::int64_t max) {
    std::size_t value = static_cast<std::size_t>(out.count());
    size(t, table_name, key, value, min, max);
    out = Duration(static_cast<typename Duration::rep>(value));
  }

  void path(const toml::table* t, std::string_view table_name, std::string_view key,
            fs::path& out) {
    if (auto v = get<std::string>(t, table_name, key, "a string (a file path)")) {
      out = fs::path(*v).is_absolute() ? fs::path(*v) : base / *v;
    }
  }
};

// Checks that a PEM file exists and holds what it should.
std::optional<std::string> check_pem(const fs::path& file, bool private_key) {
  FILE* f = std::fopen(file.c_str(), "r");
  if (!f) return "cannot read " + file.string();
  bool ok = false;
  if (private_key) {
    EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    ok = key != nullptr;
    EVP_PKEY_free(key);
  } else {
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    ok = cert != nullptr;
    X509_free(cert);
  }
  std::fclose(f);
  if (!ok) {
    return file.string() + " holds no PEM " + (private_key ? "private key" : "certificate");
  }
  return std::nullopt;
}

}  // namespace

bool parse_listen(const std::string& text, std::string& address, std::uint16_t& port) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {  // [::1]:8443
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (host.empty() || port_text.empty() || port_text.size() > 5) return false;
  for (char c : port_text) {
    if (c < '0' || c > '9') return false;
  }
  const int value = std::stoi(port_text);
  if (value > 65535) return false;
  address = host;
  port = static_cast<std::uint16_t>(value);
  return true;
}

std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warn:
      return "warn";
    case LogLevel::error:
      return "error";
  }
  return "info";
}

std::optional<LogLevel> parse_log_level(std::string_view name) {
  for (LogLevel level : {LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error}) {
    if (log_level_name(level) == name) return level;
  }
  return std::nullopt;
}

LoadResult load_config(const fs::path& file) {
  LoadResult result;
  Config& config = result.config;
  config.source = file;
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& error) {
    const auto& where = error.source().begin;
    result.problems.push_back(file.string() + ":" + std::to_string(where.line) + ":" +
                              std::to_string(where.column) +
                              ": TOML syntax error: " + std::string(error.description()));
    return result;
  }
  const fs::path base = fs::absolute(file).parent_path();
  Parser p{root, base, result.problems};

  static const std::set<std::string_view> kTables = {"server", "limits", "protocol", "audit",
                                                     "log",    "token",  "database"};
  for (const auto& [key, value] : root) {
    if (!kTables.contains(key.str())) {
      result.problems.push_back("unknown table or key \"" + std::string(key.str()) +
                                "\" (known tables: " + Parser::join(kTables) + ")");
    }
  }

  const auto* server =
      p.table("server", {"listen", "tls_cert", "tls_key", "bridge_ca", "tls_min_version",
                         "io_threads", "worker_threads", "drain_timeout_ms", "node_name"});
  if (auto listen = p.get<std::string>(server, "server", "listen", "a string \"host:port\"")) {
    if (!parse_listen(*listen, config.server.listen_address, config.server.listen_port)) {
      result.problems.push_back("server.listen = \"" + *listen +
                                "\" is not host:port (e.g. \"127.0.0.1:8443\", \"[::]:8443\")");
    }
  }
  p.path(server, "server", "tls_cert", config.server.tls_cert);
  p.path(server, "server", "tls_key", config.server.tls_key);
  p.path(server, "server", "bridge_ca", config.server.bridge_ca);
  if (auto v = p.get<std::string>(server, "server", "tls_min_version", "\"1.2\" or \"1.3\"")) {
    if (*v == "1.3") {
      config.server.tls_min_version = TlsMinVersion::tls1_3;
    } else if (*v == "1.2") {
      config.server.tls_min_version = TlsMinVersion::tls1_2;
    } else {
      result.problems.push_back("server.tls_min_version = \"" + *v +
                                "\": must be \"1.3\" (default) or \"1.2\"");
    }
  }
  p.size(server, "server", "io_threads", config.server.io_threads, 0, kMaxIoThreads);
  p.size(server, "server", "worker_threads", config.server.worker_threads, 0, kMaxWorkerThreads);
  p.duration(server, "server", "drain_timeout_ms", config.server.drain_timeout, 0, 600000);
  if (auto v = p.get<std::string>(server, "server", "node_name", "a string")) {
    if (kms::valid_node_name(*v)) {
      config.server.node_name = *v;
    } else {
      result.problems.push_back("server.node_name = \"" + *v +
                                "\": 1 to 64 characters of A-Z a-z 0-9 . _ -");
    }
  }

  const auto* limits = p.table(
      "limits", {"max_body_bytes", "max_header_bytes", "max_connections", "max_pending_requests",
                 "handshake_timeout_ms", "read_timeout_ms", "write_timeout_ms", "max_handshakes",
                 "max_connections_per_source", "max_handshakes_per_source", "token_stall_ms",
                 "max_in_flight_per_session", "requests_per_second_per_source",
                 "request_burst_per_source", "rate_limit_sources"});
  p.size(limits, "limits", "max_body_bytes", config.limits.max_body_bytes, 256, 1 << 20);
  p.size(limits, "limits", "max_header_bytes", config.limits.max_header_bytes, 1024, 1 << 16);
  p.size(limits, "limits", "max_connections", config.limits.max_connections, 1, 1 << 20);
  p.size(limits, "limits", "max_pending_requests", config.limits.max_pending_requests, 1, 1 << 20);
  // Connection budgets (server.cpp caps each at the one it lies within).
  p.size(limits, "limits", "max_handshakes", config.limits.max_handshakes, 1, 1 << 20);
  p.size(limits, "limits", "max_connections_per_source", config.limits.max_connections_per_source,
         1, 1 << 20);
  p.size(limits, "limits", "max_handshakes_per_source", config.limits.max_handshakes_per_source, 1,
         1 << 20);
  // Admission control (admission_control.h).
  p.size(limits, "limits", "max_in_flight_per_session", config.limits.max_in_flight_per_session, 1,
         1024);
  p.size(limits, "limits", "requests_per_second_per_source",
         config.limits.requests_per_second_per_source, 0, 1000000);
  p.size(limits, "limits", "request_burst_per_source", config.limits.request_burst_per_source, 1,
         1000000);
  p.size(limits, "limits", "rate_limit_sources", config.limits.rate_limit_sources, 16, 1 << 20);
  p.duration(limits, "limits", "handshake_timeout_ms", config.limits.handshake_timeout, 100,
             600000);
  p.duration(limits, "limits", "read_timeout_ms", config.limits.read_timeout, 100, 3600000);
  p.duration(limits, "limits", "write_timeout_ms", config.limits.write_timeout, 100, 600000);
  p.duration(limits, "limits", "token_stall_ms", config.limits.token_stall, 100, 600000);

  const auto* protocol =
      p.table("protocol", {"freshness_window_s", "conference_ttl_s", "replay_cache_size"});
  p.duration(protocol, "protocol", "freshness_window_s", config.protocol.freshness_window, 1,
             86400);
  p.duration(protocol, "protocol", "conference_ttl_s", config.protocol.conference_ttl, 60,
             30 * 86400);
  p.size(protocol, "protocol", "replay_cache_size", config.protocol.replay_cache_size, 1000,
         100000000);

  const auto* audit = p.table("audit", {"path", "refusal_summary_interval_ms", "retry_interval_ms",
                                        "rotate_bytes", "rotate_seconds", "sync_interval_ms"});
  p.path(audit, "audit", "path", config.audit.path);
  p.duration(audit, "audit", "refusal_summary_interval_ms", config.audit.refusal_summary_interval,
             100, 3600000);
  p.duration(audit, "audit", "retry_interval_ms", config.audit.retry_interval, 10, 600000);
  p.size(audit, "audit", "rotate_bytes", config.audit.rotate_bytes, 0, std::int64_t{1} << 40);
  p.duration(audit, "audit", "rotate_seconds", config.audit.rotate_age, 0, 366 * 86400);
  p.duration(audit, "audit", "sync_interval_ms", config.audit.sync_interval, 0, 60000);
  if (!audit || !audit->get("path")) config.audit.path = base / config.audit.path;

  const auto* log = p.table("log", {"level", "format"});
  if (auto v = p.get<std::string>(log, "log", "level", "debug, info, warn or error")) {
    if (auto level = parse_log_level(*v)) {
      config.log.level = *level;
    } else {
      result.problems.push_back("log.level = \"" + *v + "\": must be debug, info, warn or error");
    }
  }
  if (auto v = p.get<std::string>(log, "log", "format", "\"kv\" or \"json\"")) {
    if (*v == "kv") {
      config.log.format = LogFormat::kv;
    } else if (*v == "json") {
      config.log.format = LogFormat::json;
    } else {
      result.problems.push_back("log.format = \"" + *v + "\": must be \"kv\" or \"json\"");
    }
  }

  // The token layer reads only [database] path and lets other keys pass (they could be
  // another layer's); kmsd has no other, so a typo there is an error like anywhere else.
  (void)p.table("database", {"path", "url"});

  try {
    config.token = tokens::load_token_config(root, file);  // relative paths: token_config.h
  } catch (const tokens::ConfigError& error) {
    result.problems.push_back(error.what());
  }

  if (result.problems.empty()) {
    for (auto& problem : validate(config)) result.problems.push_back(std::move(problem));
  }
  return result;
}

std::vector<std::string> validate(const Config& config) {
  std::vector<std::string> problems;
  const auto need_pem = [&](const fs::path& file, std::string_view key, bool private_key) {
    if (file.empty()) {
      problems.push_back("server." + std::string(key) + " is required");
    } else if (auto problem = check_pem(file, private_key)) {
      problems.push_back("server." + std::string(key) + ": " + *problem);
    }
  };
  need_pem(config.server.tls_cert, "tls_cert", false);
  need_pem(config.server.tls_key, "tls_key", true);
  need_pem(config.server.bridge_ca, "bridge_ca", false);
  const fs::path audit_dir = fs::absolute(config.audit.path).parent_path();
  if (!fs::is_directory(audit_dir)) {
    problems.push_back("audit.path: folder " + audit_dir.string() + " does not exist");
  }
  try {
    config.token.validate();
    (void)config.token.pin_source();
  } catch (const tokens::ConfigError& error) {
    problems.push_back(error.what());
  }
  return problems;
}

}  // namespace kms::server
