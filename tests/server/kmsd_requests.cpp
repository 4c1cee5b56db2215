#include "kmsd_requests.h"

namespace kmstest {

using kms::tools::ClientTlsOptions;
using kms::tools::HttpsClient;
using kms::tools::ServerUrl;

kms::client::Profile profile_of(const std::string& name) {
  return name == "sp800-108-cmac" ? kms::client::Profile::sp800_108_cmac
                                  : kms::client::Profile::aes_ecb_sha256;
}

std::unique_ptr<HttpsClient> ue_connection(const KmsdProcess& kmsd, const TestPki& pki) {
  ClientTlsOptions tls;
  tls.ca_file = pki.server_ca;
  return std::make_unique<HttpsClient>(ServerUrl::parse(kmsd.url()), tls);
}

std::unique_ptr<HttpsClient> bridge_connection(const KmsdProcess& kmsd, const TestPki& pki,
                                               const CertFiles& cert) {
  ClientTlsOptions tls;
  tls.ca_file = pki.server_ca;
  tls.cert_file = cert.cert;
  tls.key_file = cert.key;
  return std::make_unique<HttpsClient>(ServerUrl::parse(kmsd.url()), tls);
}

kms::client::UeClient ue_client(const KmsdEnvironment& environment, const std::string& identity) {
  return kms::client::UeClient(identity, environment.root_key(identity), 1,
                               profile_of(environment.profile()));
}

kms::KeyRequest key_request(const KmsdEnvironment& environment, const std::string& chair,
                            const kms::client::Secret& r_a, const std::string& invitee,
                            const kms::client::Secret& r_b) {
  return kms::KeyRequest{chair, invitee,
                         ue_client(environment, chair).chair_envelope(r_a, invitee, kSuite),
                         ue_client(environment, invitee).responder_envelope(r_b, chair, kSuite)};
}

std::optional<double> metric_value(const std::string& metrics, const std::string& sample) {
  const std::string needle = "\n" + sample + " ";
  const auto at = ("\n" + metrics).find(needle);
  if (at == std::string::npos) return std::nullopt;
  return std::stod(metrics.substr(at + needle.size() - 1));
}

std::optional<double> fetch_metric(const KmsdProcess& kmsd, const TestPki& pki,
                                   const std::string& sample) {
  try {
    const auto metrics = ue_connection(kmsd, pki)->get("/metrics");
    if (metrics.status != 200) return std::nullopt;
    return metric_value(metrics.body, sample);
  } catch (const kms::tools::TransportError&) {
    return std::nullopt;
  }
}

}  // namespace kmstest
