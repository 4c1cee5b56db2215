#include "tokens/kdf.h"

#include <openssl/evp.h>

#include <string>

#include "hsm/error.h"
#include "hsm/mechanism.h"

namespace tokens {
namespace {

constexpr CK_ULONG kDerivedKeyBytes = 32;

// SHA-256(label || 0x00 || context): the context may hold nonces, so the buffer is wiped.
hsm::SecureBytes hashed_context(hsm::ByteView label, hsm::ByteView context) {
  hsm::SecureBytes digest(32);
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  const std::uint8_t separator = 0x00;
  unsigned int length = 0;
  const bool ok = md != nullptr && EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(md, label.data(), label.size()) == 1 &&
                  EVP_DigestUpdate(md, &separator, 1) == 1 &&
                  EVP_DigestUpdate(md, context.data(), context.size()) == 1 &&
                  EVP_DigestFinal_ex(md, digest.data(), &length) == 1 && length == 32;
  EVP_MD_CTX_free(md);
  if (!ok) throw hsm::Error(hsm::ErrorKind::software, "SHA-256", "KDF context digest");
  return digest;
}

}  // namespace

CK_OBJECT_HANDLE derive(hsm::Session& session, const TokenProfile& profile, CK_OBJECT_HANDLE base,
                        hsm::ByteView label, hsm::ByteView context,
                        hsm::AttributeTemplate attributes) {
  attributes.set_ulong(CKA_VALUE_LEN, kDerivedKeyBytes);
  if (profile.kdf == KdfKind::aes_ecb_sha256) {
    const hsm::SecureBytes digest = hashed_context(label, context);
    hsm::Mechanism mechanism = hsm::Mechanism::aes_ecb_encrypt_data(digest.view());
    return session.derive_key(mechanism, base, std::move(attributes));
  }
  hsm::Mechanism mechanism = hsm::Mechanism::sp800_108_counter(CKM_AES_CMAC, label, context);
  return session.derive_key(mechanism, base, std::move(attributes));
}

}  // namespace tokens
