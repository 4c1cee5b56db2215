#include "client_tls.h"

#include <openssl/err.h>
#include <sys/socket.h>

#include <string>

namespace kms::tools {

std::string ssl_errors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    text += (text.empty() ? "" : "; ") + std::string(buffer);
  }
  return text;
}

void configure_client_context(SSL_CTX* context, const ClientTlsOptions& options) {
  SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
  SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(context, options.ca_file.c_str(), nullptr) != 1) {
    throw TransportError("cannot load CA file " + options.ca_file + ": " + ssl_errors());
  }
  if (options.cert_file.empty()) return;
  if (SSL_CTX_use_certificate_chain_file(context, options.cert_file.c_str()) != 1) {
    throw TransportError("cannot load client certificate " + options.cert_file + ": " +
                         ssl_errors());
  }
  const std::string& key = options.key_file.empty() ? options.cert_file : options.key_file;
  if (SSL_CTX_use_PrivateKey_file(context, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(context) != 1) {
    throw TransportError("cannot load client key " + key + ": " + ssl_errors());
  }
}

void set_socket_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace kms::tools
