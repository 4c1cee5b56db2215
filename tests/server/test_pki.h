// Test certificates made with the OpenSSL API in a temp folder: a server CA and server
// certificate (SAN 127.0.0.1), a bridge CA, another CA, and bridge client certificates
// (valid, expired, from the other CA, of an unprovisioned bridge).
#pragma once

#include <string>

namespace kmstest {

struct CertFiles {
  std::string cert;
  std::string key;
};

struct TestPki {
  std::string server_ca;  // trust anchor for clients
  CertFiles server;
  std::string bridge_ca;
  std::string bridge_ca_key;
  CertFiles bridge;                // SAN URI kBridgeId, chains to bridge_ca
  CertFiles bridge_expired;        // same identity, expired
  CertFiles bridge_other_ca;       // same identity, signed by another CA
  CertFiles bridge_unprovisioned;  // SAN URI kUnprovisionedBridgeId, chains to bridge_ca
  CertFiles bridge_no_san;         // chains to bridge_ca, no SAN URI

  static TestPki create(const std::string& dir);
  // A bridge client certificate from bridge_ca whose one SAN URI is exactly `san_uri` (any
  // bytes, e.g. control characters), written to dir/name.crt and dir/name.key.
  CertFiles issue_bridge(const std::string& dir, const std::string& name,
                         const std::string& san_uri) const;
  // A new server CA + certificate in dir (for the SIGHUP reload test): overwrites `server`.
  static std::string reissue_server(const std::string& dir, const CertFiles& server);
};

inline constexpr const char* kBridgeId = "sip:bridge1@ims.example.net";
inline constexpr const char* kUnprovisionedBridgeId = "sip:bridge9@ims.example.net";

}  // namespace kmstest
