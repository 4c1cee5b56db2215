// kmsd's configuration: one TOML file (docs/SERVER.md, "Configuration"). kmsd parses the
// [server], [limits], [protocol], [audit] and [log] tables; the [token] and [database]
// tables go to the token layer's parser (tokens/token_config_toml.h). Relative paths are
// resolved against the configuration file's folder.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kms/node_name.h"
#include "tokens/token_config.h"

namespace kms::server {

enum class TlsMinVersion { tls1_2, tls1_3 };
enum class LogLevel { debug, info, warn, error };
enum class LogFormat { kv, json };

struct ServerSettings {
  std::string listen_address = "127.0.0.1";
  std::uint16_t listen_port = 8443;  // 0: chosen by the OS (see --port-file)
  std::filesystem::path tls_cert;    // PEM: server certificate (+ chain)
  std::filesystem::path tls_key;     // PEM: its private key
  std::filesystem::path bridge_ca;   // PEM: CA(s) that bridge client certificates chain to
  TlsMinVersion tls_min_version = TlsMinVersion::tls1_3;
  std::size_t io_threads = 0;      // 0: the machine's hardware threads (at least 2)
  std::size_t worker_threads = 0;  // token calls; 0: the machine's hardware threads (>= 2)
  std::chrono::milliseconds drain_timeout{10000};
  // This node's name among the nodes sharing one database: the key of its audit anchor
  // (docs/DEPLOYMENT.md "Audit across nodes"). Default: the host name.
  std::string node_name = kms::default_node_name();
};

struct Limits {
  std::size_t max_body_bytes = 16 * 1024;
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_connections = 1024;  // open connections, in any state
  // Connections that have not completed their TLS handshake (a budget within
  // max_connections), and per source address (IPv6: per /64) docs/SERVER.md "Connection
  // limits".
  std::size_t max_handshakes = 256;
  std::size_t max_connections_per_source = 128;
  std::size_t max_handshakes_per_source = 16;
  std::size_t max_pending_requests = 256;  // queued for the worker pool; beyond: 503
  // Admission control (docs/SERVER.md "Admission control"): requests in flight at most
  // this many per token session (and max_pending_requests); a token bucket per source.
  std::size_t max_in_flight_per_session = 4;
  std::size_t requests_per_second_per_source = 200;  // 0: no rate limit
  std::size_t request_burst_per_source = 400;
  std::size_t rate_limit_sources = 4096;  // sources tracked at once (bucket table slots)
  std::chrono::milliseconds handshake_timeout{3000};
  std::chrono::milliseconds read_timeout{10000};  // idle wait + whole request
  std::chrono::milliseconds write_timeout{10000};
  // A token call running longer than this means the token hangs: /readyz answers 503 and
  // token requests 503 token_unavailable at once, without waiting for a worker.
  std::chrono::milliseconds token_stall{5000};
};

struct ProtocolSettings {
  std::chrono::seconds freshness_window{300};
  std::chrono::seconds conference_ttl{86400};
  std::size_t replay_cache_size = 1000000;
};

struct AuditSettings {
  std::filesystem::path path = "audit.log";
  // Unauthenticated refusals: one record per source and code per interval, the rest counted
  // into a summary record (kms/audit/refusal_summary.h).
  std::chrono::milliseconds refusal_summary_interval{10000};
  // A failed log tries to resume at most this often (kms/audit/audit_log.h).
  std::chrono::milliseconds retry_interval{1000};
  // Segments: the live file is rotated once it holds this many bytes / its first record is
  // this old (0: never; kms/audit/audit_segment.h).
  std::size_t rotate_bytes = 0;
  std::chrono::seconds rotate_age{0};
  // One durable write per registry batch: the batch's audit records are durable with its
  // COMMIT (the registry's audit_journal) and the file is fdatasync'ed this often, off the
  // request path (0: every batch waits for an fdatasync of the file before its COMMIT).
  std::chrono::milliseconds sync_interval{200};
};

struct LogSettings {
  LogLevel level = LogLevel::info;
  LogFormat format = LogFormat::kv;
};

struct Config {
  ServerSettings server;
  Limits limits;
  ProtocolSettings protocol;
  AuditSettings audit;
  LogSettings log;
  tokens::TokenConfig token;
  std::filesystem::path source;  // the file it came from
};

// Upper bounds of server.io_threads and server.worker_threads (and of --io-threads and
// --worker-threads); every range is in docs/SERVER.md "Configuration reference".
inline constexpr std::size_t kMaxIoThreads = 256;
inline constexpr std::size_t kMaxWorkerThreads = 1024;

// Every problem found, each naming the table.key and what is wrong; empty if valid.
struct LoadResult {
  Config config;
  std::vector<std::string> problems;
  bool ok() const { return problems.empty(); }
};

// Parses and validates (values, ranges, that the files named exist and are readable PEM).
LoadResult load_config(const std::filesystem::path& file);
// Re-validates after command-line overrides.
std::vector<std::string> validate(const Config& config);

// "127.0.0.1:8443", "[::1]:0" -> address and port; false if malformed.
bool parse_listen(const std::string& text, std::string& address, std::uint16_t& port);

std::string_view log_level_name(LogLevel level);
std::optional<LogLevel> parse_log_level(std::string_view name);

}  // namespace kms::server
