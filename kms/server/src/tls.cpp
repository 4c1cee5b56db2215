#include "kms/server/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdexcept>

namespace kms::server {
namespace {

namespace ssl = boost::asio::ssl;

std::string name_text(const X509_NAME* name) {
  if (!name) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<std::size_t>(length));
  BIO_free(bio);
  return text;
}

}  // namespace

std::string openssl_errors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

std::shared_ptr<ssl::context> make_server_context(const TlsFiles& files) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();
  ERR_clear_error();
  const int min = files.min_version == TlsMinVersion::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
  SSL_CTX_set_min_proto_version(ctx, min);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0);  // no resumption: a certificate is verified every time
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (files.min_version == TlsMinVersion::tls1_2 &&
      SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
    throw std::runtime_error("TLS 1.2 cipher list: " + openssl_errors());
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert.c_str()) != 1) {
    throw std::runtime_error("server.tls_cert " + files.cert.string() + ": " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw std::runtime_error("server.tls_key " + files.key.string() + ": " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    throw std::runtime_error("server.tls_key does not match server.tls_cert: " + openssl_errors());
  }
  if (SSL_CTX_load_verify_locations(ctx, files.bridge_ca.c_str(), nullptr) != 1) {
    throw std::runtime_error("server.bridge_ca " + files.bridge_ca.string() + ": " +
                             openssl_errors());
  }
  STACK_OF(X509_NAME)* ca_names = SSL_load_client_CA_file(files.bridge_ca.c_str());
  if (!ca_names) {
    throw std::runtime_error("server.bridge_ca " + files.bridge_ca.string() + ": " +
                             openssl_errors());
  }
  SSL_CTX_set_client_CA_list(ctx, ca_names);  // takes ownership
  SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  // Ask for a certificate, never fail the handshake over it: the bridge route decides.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  SSL_CTX_set_verify_depth(ctx, 4);
  return context;
}

TlsContextProvider::TlsContextProvider(TlsFiles files)
    : files_(std::move(files)), context_(make_server_context(files_)) {}

std::shared_ptr<ssl::context> TlsContextProvider::current() const {
  std::lock_guard lock(mutex_);
  return context_;
}

std::string TlsContextProvider::reload() {
  try {
    auto fresh = make_server_context(files_);
    std::lock_guard lock(mutex_);
    context_ = std::move(fresh);
    return {};
  } catch (const std::exception& error) {
    return error.what();
  }
}

BridgePeer check_bridge_peer(SSL* ssl) {
  BridgePeer peer;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) {
    peer.problem = "no client certificate";
    return peer;
  }
  peer.subject = name_text(X509_get_subject_name(cert));
  peer.issuer = name_text(X509_get_issuer_name(cert));
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    peer.problem =
        std::string("client certificate rejected: ") + X509_verify_cert_error_string(verify);
    return peer;
  }
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::vector<std::string> uris;
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_URI) {
      const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                        static_cast<std::size_t>(ASN1_STRING_length(uri)));
    }
  }
  GENERAL_NAMES_free(names);
  if (uris.size() != 1) {
    peer.problem =
        "client certificate must carry exactly one SAN URI (the bridge identity); "
        "it has " +
        std::to_string(uris.size());
    return peer;
  }
  peer.identity = uris.front();
  peer.authenticated = true;
  return peer;
}

}  // namespace kms::server
