// Raw HTTPS for hostile-client tests: arbitrary requests (any method, content type, body),
// and a TLS connection that writes bytes as slowly as a test wants.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace kmstest {

struct RawResponse {
  unsigned status = 0;  // 0: the server closed the connection without a response
  std::string body;
  std::string header(const std::string& name) const;
  std::string headers;
};

// One request on a new TLS connection (optionally with a client certificate).
RawResponse https_request(std::uint16_t port, const std::string& ca_file, const std::string& method,
                          const std::string& target, const std::string& content_type,
                          const std::string& body, const std::string& cert_file = {},
                          const std::string& key_file = {});

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

// A plain TCP connection that never speaks (connection flood); -1 on failure.
int open_silent_tcp(std::uint16_t port);

}  // namespace kmstest
