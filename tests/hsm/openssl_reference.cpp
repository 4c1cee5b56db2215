#include "openssl_reference.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <memory>
#include <stdexcept>

namespace hsmtest::reference {
namespace {

using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

CipherContext new_context() {
  CipherContext ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  if (!ctx) throw std::runtime_error("EVP_CIPHER_CTX_new");
  return ctx;
}

void ok(int result, const char* what) {
  if (result != 1) throw std::runtime_error(std::string("OpenSSL: ") + what);
}

hsm::Bytes wrap_pad(const hsm::Bytes& kek, const hsm::Bytes& input, bool encrypt) {
  auto ctx = new_context();
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  ok(EVP_CipherInit_ex(ctx.get(), EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr,
                       encrypt ? 1 : 0),
     "wrap init");
  hsm::Bytes out(input.size() + 16);
  int length = 0;
  ok(EVP_CipherUpdate(ctx.get(), out.data(), &length, input.data(), static_cast<int>(input.size())),
     encrypt ? "wrap" : "unwrap");
  int final_length = 0;
  ok(EVP_CipherFinal_ex(ctx.get(), out.data() + length, &final_length), "wrap final");
  out.resize(static_cast<std::size_t>(length + final_length));
  return out;
}

}  // namespace

hsm::Bytes random_bytes(std::size_t n) {
  hsm::Bytes out(n);
  ok(RAND_bytes(out.data(), static_cast<int>(n)), "RAND_bytes");
  return out;
}

hsm::Bytes sha256(const hsm::Bytes& data) {
  hsm::Bytes digest(SHA256_DIGEST_LENGTH);
  SHA256(data.data(), data.size(), digest.data());
  return digest;
}

hsm::Bytes aes256_ecb(const hsm::Bytes& key, const hsm::Bytes& data) {
  auto ctx = new_context();
  ok(EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ecb(), nullptr, key.data(), nullptr), "ecb init");
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  hsm::Bytes out(data.size() + 16);
  int length = 0, final_length = 0;
  ok(EVP_EncryptUpdate(ctx.get(), out.data(), &length, data.data(), static_cast<int>(data.size())),
     "ecb");
  ok(EVP_EncryptFinal_ex(ctx.get(), out.data() + length, &final_length), "ecb final");
  out.resize(static_cast<std::size_t>(length + final_length));
  return out;
}

hsm::Bytes kwp_wrap(const hsm::Bytes& kek, const hsm::Bytes& key) {
  return wrap_pad(kek, key, true);
}

hsm::Bytes kwp_unwrap(const hsm::Bytes& kek, const hsm::Bytes& wrapped) {
  return wrap_pad(kek, wrapped, false);
}

hsm::Bytes kbkdf_cmac(const hsm::Bytes& key, const hsm::Bytes& label, const hsm::Bytes& context,
                      std::size_t length) {
  std::unique_ptr<EVP_KDF, decltype(&EVP_KDF_free)> kdf(EVP_KDF_fetch(nullptr, "KBKDF", nullptr),
                                                        &EVP_KDF_free);
  if (!kdf) throw std::runtime_error("OpenSSL: no KBKDF");
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> ctx(EVP_KDF_CTX_new(kdf.get()),
                                                                &EVP_KDF_CTX_free);
  char mode[] = "counter", mac[] = "CMAC", cipher[] = "AES-256-CBC";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, mode, 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, mac, 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_CIPHER, cipher, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(key.data()),
                                        key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(label.data()),
                                        label.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<uint8_t*>(context.data()),
                                        context.size()),
      OSSL_PARAM_construct_end()};
  hsm::Bytes out(length);
  ok(EVP_KDF_derive(ctx.get(), out.data(), out.size(), params), "KBKDF");
  return out;
}

hsm::Bytes gcm_encrypt(const hsm::Bytes& key, const hsm::Bytes& iv, const hsm::Bytes& aad,
                       const hsm::Bytes& plaintext) {
  auto ctx = new_context();
  ok(EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr), "gcm init");
  ok(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()), nullptr),
     "gcm ivlen");
  ok(EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), iv.data()), "gcm key");
  int length = 0;
  if (!aad.empty()) {
    ok(EVP_EncryptUpdate(ctx.get(), nullptr, &length, aad.data(), static_cast<int>(aad.size())),
       "gcm aad");
  }
  hsm::Bytes out(plaintext.size() + 16);
  ok(EVP_EncryptUpdate(ctx.get(), out.data(), &length, plaintext.data(),
                       static_cast<int>(plaintext.size())),
     "gcm encrypt");
  int final_length = 0;
  ok(EVP_EncryptFinal_ex(ctx.get(), out.data() + length, &final_length), "gcm final");
  ok(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, out.data() + plaintext.size()),
     "gcm tag");
  return out;
}

hsm::Bytes gcm_decrypt(const hsm::Bytes& key, const hsm::Bytes& iv, const hsm::Bytes& aad,
                       const hsm::Bytes& ciphertext_and_tag) {
  if (ciphertext_and_tag.size() < 16) throw std::runtime_error("gcm: too short");
  const std::size_t text_size = ciphertext_and_tag.size() - 16;
  auto ctx = new_context();
  ok(EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr), "gcm init");
  ok(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()), nullptr),
     "gcm ivlen");
  ok(EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), iv.data()), "gcm key");
  int length = 0;
  if (!aad.empty()) {
    ok(EVP_DecryptUpdate(ctx.get(), nullptr, &length, aad.data(), static_cast<int>(aad.size())),
       "gcm aad");
  }
  hsm::Bytes out(text_size + 16);
  ok(EVP_DecryptUpdate(ctx.get(), out.data(), &length, ciphertext_and_tag.data(),
                       static_cast<int>(text_size)),
     "gcm decrypt");
  ok(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16,
                         const_cast<uint8_t*>(ciphertext_and_tag.data() + text_size)),
     "gcm tag");
  int final_length = 0;
  ok(EVP_DecryptFinal_ex(ctx.get(), out.data() + length, &final_length), "gcm tag check");
  out.resize(text_size);
  return out;
}

}  // namespace hsmtest::reference
