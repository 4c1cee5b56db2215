// Raw HTTPS for hostile-client tests: arbitrary requests (any method, content type, body),
// and a TLS connection that writes bytes as slowly as a test wants.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kmstest {

struct RawResponse {
  unsigned status = 0;  // 0: the server closed the connection without a response
  std::string body;
  std::string header(const std::string& name) const;
  std::string headers;
};

// One request on a new TLS connection (optionally with a client certificate, optionally
// from another loopback source address, e.g. "127.0.0.2": the whole 127/8 is loopback).
RawResponse https_request(std::uint16_t port, const std::string& ca_file, const std::string& method,
                          const std::string& target, const std::string& content_type,
                          const std::string& body, const std::string& cert_file = {},
                          const std::string& key_file = {}, const std::string& source_address = {});

// One keep-alive TLS connection for raw exchanges, which says how far each exchange got (the
// drain test must tell "refused before anything was sent" from "a response cut short").
// Connects on first use and again after a response with Connection: close; never retries.
class RawTlsConnection {
 public:
  enum class Outcome {
    complete,                // a whole response (status, headers, the full body)
    not_connected,           // TCP connect refused or TLS handshake failed: nothing sent
    closed_before_response,  // the connection ended (EOF, reset) before one response byte
    cut_response,            // part of a response arrived, then the connection ended
    transport_error,         // anything else, e.g. a timeout
  };
  struct Exchange {
    Outcome outcome = Outcome::transport_error;
    RawResponse response;  // complete only
    std::string error;
  };
  using Headers = std::vector<std::pair<std::string, std::string>>;

  RawTlsConnection(std::uint16_t port, std::string ca_file, std::string cert_file = {},
                   std::string key_file = {}, std::string source_address = {});
  ~RawTlsConnection();
  Exchange exchange(const std::string& method, const std::string& target,
                    const std::string& content_type = {}, const std::string& body = {},
                    const Headers& headers = {});
  bool connected() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

const char* outcome_name(RawTlsConnection::Outcome outcome);

// A TLS connection on which the test writes raw bytes.
class SlowTlsConnection {
 public:
  SlowTlsConnection(std::uint16_t port, const std::string& ca_file);
  ~SlowTlsConnection();
  // false once the server has closed the connection (write or read fails).
  bool write(const std::string& bytes);
  // true if the server closed the connection (EOF/reset) within `wait`.
  bool closed_by_server(std::chrono::milliseconds wait);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A plain TCP connection that never speaks (connection flood); -1 on failure. From
// `source_address` when given (bound before connecting).
int open_silent_tcp(std::uint16_t port, const std::string& source_address = {});

}  // namespace kmstest
