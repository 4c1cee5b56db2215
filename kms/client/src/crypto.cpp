#include "kms/client/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <memory>

#include "kms/client/client_error.h"

namespace kms::client {
namespace {

[[noreturn]] void crypto_failure(const char* what) {
  throw ClientError(ClientErrorCode::crypto_failure, what);
}

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;
CipherCtx new_cipher_ctx() {
  CipherCtx ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  if (!ctx) crypto_failure("EVP_CIPHER_CTX_new");
  return ctx;
}

void require_key(ByteView key) {
  if (key.size() != kKeySize) {
    throw ClientError(ClientErrorCode::invalid_argument, "key must be 32 bytes");
  }
}

Secret kdf_aes_ecb_sha256(ByteView key, ByteView label, ByteView context) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  if (md == nullptr) crypto_failure("EVP_MD_CTX_new");
  Secret digest(SHA256_DIGEST_LENGTH);
  const std::uint8_t separator = 0x00;
  unsigned int digest_size = 0;
  bool ok = EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(md, label.data(), label.size()) == 1 &&
            EVP_DigestUpdate(md, &separator, 1) == 1 &&
            EVP_DigestUpdate(md, context.data(), context.size()) == 1 &&
            EVP_DigestFinal_ex(md, digest.data(), &digest_size) == 1;
  EVP_MD_CTX_free(md);
  if (!ok) crypto_failure("SHA-256");

  CipherCtx ctx = new_cipher_ctx();
  Secret out(kKeySize);
  int written = 0;
  int final_written = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ecb(), nullptr, key.data(), nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data(), &written, digest.data(),
                        static_cast<int>(digest.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + written, &final_written) != 1 ||
      written + final_written != static_cast<int>(kKeySize)) {
    crypto_failure("AES-256-ECB");
  }
  return out;
}

Secret kdf_sp800_108_cmac(ByteView key, ByteView label, ByteView context) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "KBKDF", nullptr);
  if (kdf == nullptr) crypto_failure("EVP_KDF_fetch KBKDF");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (ctx == nullptr) crypto_failure("EVP_KDF_CTX_new");
  char mode[] = "counter";
  char mac[] = "CMAC";
  char cipher[] = "AES-256-CBC";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, mode, 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, mac, 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_CIPHER, cipher, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(key.data()),
                                        key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                        const_cast<std::uint8_t*>(label.data()), label.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                        const_cast<std::uint8_t*>(context.data()), context.size()),
      OSSL_PARAM_construct_end()};
  Secret out(kKeySize);
  int rc = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (rc != 1) crypto_failure("KBKDF derive");
  return out;
}

}  // namespace

Secret kdf(Profile profile, ByteView key, ByteView label, ByteView context) {
  require_key(key);
  switch (profile) {
    case Profile::aes_ecb_sha256:
      return kdf_aes_ecb_sha256(key, label, context);
    case Profile::sp800_108_cmac:
      return kdf_sp800_108_cmac(key, label, context);
  }
  throw ClientError(ClientErrorCode::invalid_argument, "unknown profile");
}

Secret random_bytes(std::size_t size) {
  Secret out(size);
  if (size > 0 && RAND_bytes(out.data(), static_cast<int>(size)) != 1) crypto_failure("RAND_bytes");
  return out;
}

Bytes aes_gcm_seal(ByteView key, ByteView iv, ByteView aad, ByteView plaintext) {
  require_key(key);
  if (iv.size() != kIvSize)
    throw ClientError(ClientErrorCode::invalid_argument, "IV must be 12 bytes");
  CipherCtx ctx = new_cipher_ctx();
  Bytes out(plaintext.size() + kTagSize);
  int written = 0;
  int final_written = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()),
                          nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), iv.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &written, aad.data(), static_cast<int>(aad.size())) !=
          1 ||
      EVP_EncryptUpdate(ctx.get(), out.data(), &written, plaintext.data(),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + written, &final_written) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize),
                          out.data() + plaintext.size()) != 1) {
    crypto_failure("AES-256-GCM seal");
  }
  return out;
}

Secret aes_gcm_open(ByteView key, ByteView iv, ByteView aad, ByteView sealed) {
  require_key(key);
  if (iv.size() != kIvSize || sealed.size() < kTagSize) {
    throw ClientError(ClientErrorCode::malformed_message, "GCM input too short");
  }
  const std::size_t text_size = sealed.size() - kTagSize;
  CipherCtx ctx = new_cipher_ctx();
  Secret out(text_size);
  std::uint8_t tag[kTagSize];
  std::copy(sealed.begin() + static_cast<std::ptrdiff_t>(text_size), sealed.end(), tag);
  int written = 0;
  int final_written = 0;
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()),
                          nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), iv.data()) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &written, aad.data(), static_cast<int>(aad.size())) !=
          1 ||
      EVP_DecryptUpdate(ctx.get(), out.data(), &written, sealed.data(),
                        static_cast<int>(text_size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize), tag) != 1) {
    crypto_failure("AES-256-GCM open");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + written, &final_written) != 1) {
    throw ClientError(ClientErrorCode::unwrap_failed, "GCM tag does not verify");
  }
  return out;
}

namespace {
CipherCtx wrap_ctx(ByteView kek, bool encrypt) {
  require_key(kek);
  CipherCtx ctx = new_cipher_ctx();
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr,
                        encrypt ? 1 : 0) != 1) {
    crypto_failure("AES key wrap init");
  }
  return ctx;
}
}  // namespace

Bytes aes_key_wrap_pad(ByteView kek, ByteView key) {
  CipherCtx ctx = wrap_ctx(kek, true);
  Bytes out(key.size() + 16);
  int written = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &written, key.data(), static_cast<int>(key.size())) !=
      1) {
    crypto_failure("AES key wrap");
  }
  out.resize(static_cast<std::size_t>(written));
  return out;
}

Secret aes_key_unwrap_pad(ByteView kek, ByteView wrapped) {
  if (wrapped.size() < 16 || wrapped.size() % 8 != 0) {
    throw ClientError(ClientErrorCode::malformed_message, "wrapped key length");
  }
  CipherCtx ctx = wrap_ctx(kek, false);
  Secret out(wrapped.size());
  int written = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &written, wrapped.data(),
                       static_cast<int>(wrapped.size())) != 1 ||
      written <= 0) {
    throw ClientError(ClientErrorCode::unwrap_failed, "RFC 5649 integrity check failed");
  }
  Secret key(ByteView(out.data(), static_cast<std::size_t>(written)));
  return key;
}

}  // namespace kms::client
