// Client-side TLS plumbing shared by HttpsClient and the tests' raw hostile client: one
// place that loads the CA and the optional client certificate, and bounds socket waits.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <string>

#include "https_client.h"

namespace kms::tools {

// TLS >= 1.2, server verified against options.ca_file, options.cert_file/key_file (key
// defaults to the certificate file) as client certificate when set. Throws TransportError
// naming the file and OpenSSL's reasons.
void configure_client_context(SSL_CTX* context, const ClientTlsOptions& options);

// OpenSSL's queued error reasons, joined with "; " (and dequeued).
std::string ssl_errors();

// SO_RCVTIMEO and SO_SNDTIMEO: a blocking read or write waits at most `timeout`.
void set_socket_timeouts(int fd, std::chrono::milliseconds timeout);

}  // namespace kms::tools
