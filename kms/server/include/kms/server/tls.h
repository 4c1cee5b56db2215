// TLS for kmsd: the server context (TLS 1.3, or 1.2 when configured; no session tickets, so
// every connection presents and verifies its client certificate afresh), reloadable on
// SIGHUP, and the bridge-identity check done on the bridge route.
//
// One listener serves UEs and bridges: the server asks every client for a certificate
// (verify_peer) but accepts connections without one or with one that fails verification,
// and records the verification result. The bridge route then refuses, with a JSON error
// and an audit record, any request whose connection has no certificate, a certificate that
// does not chain to the bridge CA (or has expired, or lacks clientAuth), or no single
// SAN URI identity.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "kms/server/config.h"

namespace kms::server {

struct TlsFiles {
  std::filesystem::path cert;
  std::filesystem::path key;
  std::filesystem::path bridge_ca;
  TlsMinVersion min_version = TlsMinVersion::tls1_3;
};

// Throws std::runtime_error naming the file and OpenSSL's reason.
std::shared_ptr<boost::asio::ssl::context> make_server_context(const TlsFiles& files);

// The current context; new connections take a snapshot, so a reload never disturbs a
// connection in progress.
class TlsContextProvider {
 public:
  explicit TlsContextProvider(TlsFiles files);  // throws like make_server_context
  std::shared_ptr<boost::asio::ssl::context> current() const;
  // Re-reads the files; on failure keeps the current context and returns the reason.
  std::string reload();

 private:
  TlsFiles files_;
  mutable std::mutex mutex_;
  std::shared_ptr<boost::asio::ssl::context> context_;
};

// The outcome of checking a connection's client certificate for the bridge route.
struct BridgePeer {
  bool authenticated = false;
  std::string identity;  // the SAN URI, e.g. "sip:bridge1@ims.example.net"
  std::string problem;   // why not authenticated
  std::string subject;   // certificate subject, for the audit log
  std::string issuer;
};
BridgePeer check_bridge_peer(SSL* ssl);

// OpenSSL's error queue as text (and cleared).
std::string openssl_errors();

}  // namespace kms::server
