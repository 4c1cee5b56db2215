// A small blocking HTTPS/1.1 client for kms-client: one keep-alive TLS connection, server
// certificate verified against a CA file and the host name (or IP address), optional client
// certificate for the bridge's mutual TLS, socket timeouts on every read and write.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

namespace kms::tools {

struct ServerUrl {
  std::string host;
  std::string port;
  // "https://127.0.0.1:8443" or "https://[::1]:8443"; throws std::invalid_argument.
  static ServerUrl parse(const std::string& url);
  bool is_loopback() const;
};

struct ClientTlsOptions {
  std::string ca_file;    // verifies the server
  std::string cert_file;  // client certificate (bridge), optional
  std::string key_file;
  std::chrono::milliseconds timeout{10000};
};

struct HttpResult {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class HttpsClient {
 public:
  HttpsClient(ServerUrl url, ClientTlsOptions options);  // throws TransportError (files)
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // Connects on first use and again after the server closed the connection. Throws
  // TransportError (connect, TLS, timeout).
  HttpResult post_json(const std::string& target, const std::string& body);
  HttpResult get(const std::string& target);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kms::tools
