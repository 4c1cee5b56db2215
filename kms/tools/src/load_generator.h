// kms-client load: N concurrent UEs (one keep-alive TLS connection each) sending complete
// key requests (a fresh conference per request: new R_A, R_B and both envelopes), bounded
// by a request count and a duration. Loopback servers only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "https_client.h"
#include "kms/client/secret.h"
#include "kms/client/ue_client.h"

namespace kms::tools {

struct LoadOptions {
  ServerUrl server;
  ClientTlsOptions tls;
  std::string chair_id;
  client::Secret chair_key;
  std::string responder_id;
  client::Secret responder_key;
  std::uint32_t chair_key_version = 1;
  std::uint32_t responder_key_version = 1;
  client::Profile profile = client::Profile::aes_ecb_sha256;
  client::Suite suite = client::Suite::aes_cm_128_hmac_sha1_80;
  std::size_t concurrency = 4;
  std::uint64_t max_requests = 1000;
  std::chrono::seconds max_duration{30};
  bool verify = false;  // open both responses of every request (costs client CPU)
};

struct LoadReport {
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::map<std::string, std::uint64_t> errors;  // error code or transport -> count
  double seconds = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  double throughput() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
  std::string to_text() const;
  std::string to_json() const;
};

LoadReport run_load(const LoadOptions& options);

}  // namespace kms::tools
