#include "test_pki.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>

namespace kmstest {
namespace {

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

struct Issued {
  KeyPtr key{nullptr, EVP_PKEY_free};
  CertPtr cert{nullptr, X509_free};
};

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test PKI: ") + what);
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  check(extension != nullptr, "extension");
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

// A subjectAltName of one URI holding exactly these bytes (the config syntax cannot carry
// control characters).
void add_raw_uri(X509* cert, const std::string& uri) {
  GENERAL_NAMES* names = GENERAL_NAMES_new();
  GENERAL_NAME* name = GENERAL_NAME_new();
  ASN1_IA5STRING* value = ASN1_IA5STRING_new();
  check(names && name && value, "SAN allocation");
  check(ASN1_STRING_set(value, uri.data(), static_cast<int>(uri.size())) == 1, "SAN value");
  GENERAL_NAME_set0_value(name, GEN_URI, value);
  sk_GENERAL_NAME_push(names, name);
  check(X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1, "SAN");
  GENERAL_NAMES_free(names);
}

// days_from/days_to relative to now; issuer null: self-signed.
Issued issue(const std::string& common_name, const Issued* issuer, bool ca, long days_from,
             long days_to, const std::string& san, const char* eku,
             const std::optional<std::string>& raw_uri = std::nullopt) {
  static long serial = 1000;
  Issued result;
  result.key.reset(EVP_EC_gen("P-256"));
  check(result.key != nullptr, "key");
  result.cert.reset(X509_new());
  X509* cert = result.cert.get();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), days_from * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert), days_to * 86400);
  X509_set_pubkey(cert, result.key.get());
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* issuer_cert = issuer ? issuer->cert.get() : cert;
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert));
  add_extension(cert, issuer_cert, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  add_extension(cert, issuer_cert, NID_key_usage,
                ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  add_extension(cert, issuer_cert, NID_subject_key_identifier, "hash");
  if (issuer) add_extension(cert, issuer_cert, NID_authority_key_identifier, "keyid");
  if (eku) add_extension(cert, issuer_cert, NID_ext_key_usage, eku);
  if (!san.empty()) add_extension(cert, issuer_cert, NID_subject_alt_name, san.c_str());
  if (raw_uri) add_raw_uri(cert, *raw_uri);
  EVP_PKEY* signer = issuer ? issuer->key.get() : result.key.get();
  check(X509_sign(cert, signer, EVP_sha256()) > 0, "sign");
  return result;
}

void write_cert(const std::string& path, const Issued& issued) {
  FILE* f = std::fopen(path.c_str(), "w");
  check(f != nullptr, "open cert file");
  PEM_write_X509(f, issued.cert.get());
  std::fclose(f);
}

CertFiles write_pair(const std::string& dir, const std::string& name, const Issued& issued) {
  CertFiles files{dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  write_cert(files.cert, issued);
  FILE* f = std::fopen(files.key.c_str(), "w");
  check(f != nullptr, "open key file");
  PEM_write_PrivateKey(f, issued.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  return files;
}

}  // namespace

TestPki TestPki::create(const std::string& dir) {
  TestPki pki;
  const Issued server_ca = issue("test server CA", nullptr, true, -1, 30, "", nullptr);
  const Issued bridge_ca = issue("test bridge CA", nullptr, true, -1, 30, "", nullptr);
  const Issued other_ca = issue("some other CA", nullptr, true, -1, 30, "", nullptr);
  pki.server_ca = dir + "/server-ca.crt";
  write_cert(pki.server_ca, server_ca);
  const CertFiles bridge_ca_files = write_pair(dir, "bridge-ca", bridge_ca);
  pki.bridge_ca = bridge_ca_files.cert;
  pki.bridge_ca_key = bridge_ca_files.key;
  pki.server = write_pair(
      dir, "server",
      issue("kmsd", &server_ca, false, -1, 30, "DNS:localhost,IP:127.0.0.1", "serverAuth"));
  const std::string uri = std::string("URI:") + kBridgeId;
  pki.bridge =
      write_pair(dir, "bridge1", issue("bridge1", &bridge_ca, false, -1, 30, uri, "clientAuth"));
  pki.bridge_expired = write_pair(dir, "bridge1-expired",
                                  issue("bridge1", &bridge_ca, false, -10, -1, uri, "clientAuth"));
  pki.bridge_other_ca = write_pair(dir, "bridge1-other-ca",
                                   issue("bridge1", &other_ca, false, -1, 30, uri, "clientAuth"));
  pki.bridge_unprovisioned =
      write_pair(dir, "bridge9",
                 issue("bridge9", &bridge_ca, false, -1, 30,
                       std::string("URI:") + kUnprovisionedBridgeId, "clientAuth"));
  pki.bridge_no_san = write_pair(
      dir, "bridge-no-san", issue("bridge-no-san", &bridge_ca, false, -1, 30, "", "clientAuth"));
  return pki;
}

CertFiles TestPki::issue_bridge(const std::string& dir, const std::string& name,
                                const std::string& san_uri) const {
  Issued ca;
  FILE* f = std::fopen(bridge_ca.c_str(), "r");
  check(f != nullptr, "open bridge CA certificate");
  ca.cert.reset(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  f = std::fopen(bridge_ca_key.c_str(), "r");
  check(f != nullptr, "open bridge CA key");
  ca.key.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  check(ca.cert && ca.key, "read bridge CA");
  return write_pair(dir, name, issue(name, &ca, false, -1, 30, "", "clientAuth", san_uri));
}

std::string TestPki::reissue_server(const std::string& dir, const CertFiles& server) {
  const Issued ca = issue("reissued server CA", nullptr, true, -1, 30, "", nullptr);
  const std::string ca_file = dir + "/server-ca-2.crt";
  write_cert(ca_file, ca);
  const Issued leaf =
      issue("kmsd reissued", &ca, false, -1, 30, "DNS:localhost,IP:127.0.0.1", "serverAuth");
  const CertFiles written = write_pair(dir, "server-reissued", leaf);
  std::rename(written.cert.c_str(), server.cert.c_str());
  std::rename(written.key.c_str(), server.key.c_str());
  return ca_file;
}

}  // namespace kmstest
