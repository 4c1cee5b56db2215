#include "tokens/software_unwrap.h"

#include <openssl/evp.h>

namespace tokens {

std::optional<hsm::SecureBytes> software_unwrap(hsm::ByteView kek, hsm::ByteView wrapped) {
  hsm::SecureBytes out(wrapped.size());
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int length = 0;
  int final_length = 0;
  bool ok = false;
  if (ctx != nullptr) {
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr) == 1 &&
         EVP_DecryptUpdate(ctx, out.data(), &length, wrapped.data(),
                           static_cast<int>(wrapped.size())) == 1 &&
         EVP_DecryptFinal_ex(ctx, out.data() + length, &final_length) == 1;
    EVP_CIPHER_CTX_free(ctx);
  }
  if (!ok) return std::nullopt;
  out.resize(static_cast<std::size_t>(length + final_length));
  return out;
}

}  // namespace tokens
