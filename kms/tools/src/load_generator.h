// kms-client load: a realistic load on kmsd (docs/BENCHMARKS.md, "kmsd end to end").
// Subscribers are numbered, their root keys derived from a seed (bench_subscriber_key), so
// the bench can provision any number by bulk import and the generator holds no key list.
// A conference: a chair and 2..9 invitees drawn from the subscribers, all invited at once
// (their key requests in flight together), then the bridge fetches the conference's keys.
// About 1 % of the requests are invalid (bad GCM tag, replayed E_A, stale timestamp) and
// must be refused with their codes; about 1 % of the admitted requests are retransmitted
// byte for byte and must get the identical answer. Closed loop (a fixed number of
// connections, each sending as soon as it has an answer: peak throughput) or open loop (key
// requests started at a fixed rate, latency counted from the planned start: latency at a
// given load without coordinated omission). Loopback servers only.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "https_client.h"
#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::tools {

// Subscriber number i: its identity, and its root key HMAC-SHA256(seed, identity).
std::string bench_subscriber_id(std::uint64_t index);
client::Secret bench_subscriber_key(const client::Secret& seed, std::string_view identity);

struct LoadOptions {
  ServerUrl server;
  ClientTlsOptions tls;         // UE connections: the CA
  ClientTlsOptions bridge_tls;  // the bridge's: the CA and its client certificate
  client::Profile profile = client::Profile::aes_ecb_sha256;
  client::Suite suite = client::Suite::aes_cm_128_hmac_sha1_80;
  client::Secret subscriber_seed;    // 32 bytes
  std::uint64_t subscribers = 1000;  // provisioned: bench_subscriber_id(0 .. subscribers-1)
  std::uint64_t spread = 0;          // draw members from the first `spread` only; 0 = all
  std::string bridge_id;
  client::Secret bridge_key;
  std::uint32_t bridge_key_version = 1;
  std::size_t connections = 8;
  double rate = 0;                     // key requests per second (open loop); 0 = closed loop
  std::uint64_t max_requests = 10000;  // valid key requests (invitations)
  std::chrono::duration<double> max_duration{30};
  unsigned min_members = 3, max_members = 10;  // chair included
  double invalid_fraction = 0.01;
  double retransmit_fraction = 0.01;
  bool verify = false;  // open every response and release (client CPU)
};

struct LatencySummary {
  std::uint64_t count = 0;
  double p50_ms = 0, p95_ms = 0, p99_ms = 0, max_ms = 0;
};

struct LoadReport {
  std::string mode;  // "closed" or "open"
  double offered_rate = 0;
  double seconds = 0;
  std::uint64_t conferences = 0;
  std::uint64_t key_requests_ok = 0;
  std::uint64_t retransmissions_ok = 0;
  std::uint64_t bridge_fetches_ok = 0;
  std::uint64_t invalid_sent = 0;
  std::map<std::string, std::uint64_t> refused_as_expected;  // error code -> count
  std::map<std::string, std::uint64_t> unexpected;           // what went wrong -> count
  // Load kmsd shed on purpose (429 rate_limited, 503 overloaded with Retry-After: admission
  // control, docs/SERVER.md): expected beyond capacity, reported, not retried.
  std::map<std::string, std::uint64_t> shed;  // error code -> count
  LatencySummary key_request, bridge_fetch;
  std::uint64_t unexpected_total() const;
  double throughput() const { return seconds > 0 ? key_requests_ok / seconds : 0; }
  std::string to_text() const;
  std::string to_json() const;
};

LoadReport run_load(const LoadOptions& options);

// Registers `load` on kms-client's command line. The subcommand runs from its CLI11
// callback and ends the process with its exit code: 0 when nothing unexpected happened,
// 1 when something did (the report says what), 2 for usage and file problems.
void add_load_command(CLI::App& app);

}  // namespace kms::tools
