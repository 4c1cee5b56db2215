// Client-side helpers shared by the kmsd end-to-end suites: HTTPS connections as a UE or a
// bridge, the UE client of a provisioned subscriber, and one key request (steps 2-7).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "https_client.h"
#include "kms/client/ue_client.h"
#include "kms/services.h"
#include "kmsd_fixture.h"

namespace kmstest {

inline constexpr auto kSuite = kms::client::Suite::aes_cm_128_hmac_sha1_80;

kms::client::Profile profile_of(const std::string& name);

// A UE's connection: verifies the server, no client certificate.
std::unique_ptr<kms::tools::HttpsClient> ue_connection(const KmsdProcess& kmsd, const TestPki& pki);
// A bridge's connection: mutual TLS with `cert`.
std::unique_ptr<kms::tools::HttpsClient> bridge_connection(const KmsdProcess& kmsd,
                                                           const TestPki& pki,
                                                           const CertFiles& cert);

// The UE client of a subscriber provisioned by KmsdEnvironment::create.
kms::client::UeClient ue_client(const KmsdEnvironment& environment, const std::string& identity);

// The request UE-B sends to the KMS when `chair` (nonce r_a) invites `invitee` (nonce r_b).
kms::KeyRequest key_request(const KmsdEnvironment& environment, const std::string& chair,
                            const kms::client::Secret& r_a, const std::string& invitee,
                            const kms::client::Secret& r_b);

// One sample of a Prometheus text body ("name" or "name{labels}" exactly as rendered);
// nullopt when the body has no such sample.
std::optional<double> metric_value(const std::string& metrics, const std::string& sample);
// GET /metrics on a new UE connection, then metric_value (nullopt also if /metrics fails).
std::optional<double> fetch_metric(const KmsdProcess& kmsd, const TestPki& pki,
                                   const std::string& sample);

}  // namespace kmstest
