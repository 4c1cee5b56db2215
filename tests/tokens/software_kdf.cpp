#include "software_kdf.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <stdexcept>
#include <string>

namespace testkdf {
namespace {

Bytes aes_ecb_sha256(const Bytes& key, const Bytes& label, const Bytes& context) {
  Bytes input = label;
  input.push_back(0x00);
  input.insert(input.end(), context.begin(), context.end());
  Bytes digest(SHA256_DIGEST_LENGTH);
  SHA256(input.data(), input.size(), digest.data());
  Bytes out(32);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int length = 0;
  const bool ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr) &&
                  EVP_CIPHER_CTX_set_padding(ctx, 0) &&
                  EVP_EncryptUpdate(ctx, out.data(), &length, digest.data(), 32) && length == 32;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) throw std::runtime_error("AES-256-ECB failed");
  return out;
}

Bytes kbkdf_cmac(const Bytes& key, const Bytes& label, const Bytes& context) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "KBKDF", nullptr);
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  Bytes salt = label, info = context, secret = key;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, const_cast<char*>("counter"), 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, const_cast<char*>("CMAC"), 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_CIPHER, const_cast<char*>("AES-256-CBC"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret.data(), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.data(), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  Bytes out(32);
  const bool ok = ctx != nullptr && EVP_KDF_derive(ctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  if (!ok) throw std::runtime_error("KBKDF failed");
  return out;
}

Bytes run_wrap(const Bytes& kek, const Bytes& in, bool encrypt) {
  Bytes out(in.size() + 16);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  int length = 0, final_length = 0;
  const bool ok =
      EVP_CipherInit_ex(ctx, EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr,
                        encrypt ? 1 : 0) == 1 &&
      EVP_CipherUpdate(ctx, out.data(), &length, in.data(), static_cast<int>(in.size())) == 1 &&
      EVP_CipherFinal_ex(ctx, out.data() + length, &final_length) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) throw std::runtime_error(encrypt ? "RFC 5649 wrap failed" : "RFC 5649 unwrap failed");
  out.resize(static_cast<std::size_t>(length + final_length));
  return out;
}

}  // namespace

Bytes kdf(tokens::ProfileId profile, const Bytes& key, const Bytes& label, const Bytes& context) {
  switch (profile) {  // no default: a new ProfileId without a reference KDF does not compile
    case tokens::ProfileId::aes_ecb_sha256:
      return aes_ecb_sha256(key, label, context);
    case tokens::ProfileId::sp800_108_cmac:
      return kbkdf_cmac(key, label, context);
  }
  throw std::invalid_argument("no reference KDF for profile " +
                              std::to_string(static_cast<int>(profile)));
}

Bytes wrap_pad(const Bytes& kek, const Bytes& key) { return run_wrap(kek, key, true); }
Bytes unwrap_pad(const Bytes& kek, const Bytes& wrapped) { return run_wrap(kek, wrapped, false); }

Bytes random_bytes(std::size_t size) {
  Bytes out(size);
  if (RAND_bytes(out.data(), static_cast<int>(size)) != 1) throw std::runtime_error("RAND");
  return out;
}

Bytes to_bytes(const std::string& text) { return Bytes(text.begin(), text.end()); }

Bytes label(const std::string& name) { return to_bytes("IMS-CONF-KMS/1 " + name); }

}  // namespace testkdf
