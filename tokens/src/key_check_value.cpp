#include "tokens/key_check_value.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "hsm/error.h"
#include "hsm/mechanism.h"
#include "tokens/kdf.h"
#include "tokens/key_templates.h"
#include "tokens/software_unwrap.h"
#include "tokens/token_quirks.h"

namespace tokens {
namespace {

hsm::Bytes first_bytes(hsm::ByteView bytes) {
  if (bytes.size() < kKeyCheckValueBytes) {
    throw hsm::Error(hsm::ErrorKind::software, "key check value", "output too short");
  }
  return hsm::Bytes(bytes.begin(), bytes.begin() + kKeyCheckValueBytes);
}

// A session AES key of known value shaped as a root key (what the storage key's
// CKA_WRAP_TEMPLATE accepts), extractable so that it can be wrapped.
hsm::AttributeTemplate check_key_template(hsm::ByteView value) {
  hsm::AttributeTemplate t = templates::extractable_session_aes_key(templates::TransitUse::derive);
  t.set_bytes(CKA_VALUE, value);
  return t;
}

// A one-time wrapping key of `value` (session object) to read a public value back.
hsm::AttributeTemplate one_time_wrapping_key(hsm::ByteView value) {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, false)
      .set_bool(CKA_WRAP, true)
      .set_bytes(CKA_VALUE, value);
  return t;
}

std::optional<CK_OBJECT_HANDLE> find_secret_key(hsm::Session& session, std::string_view label) {
  hsm::AttributeTemplate match;
  match.set_ulong(CKA_CLASS, CKO_SECRET_KEY).set_string(CKA_LABEL, std::string(label));
  return session.find_one(std::move(match));
}

}  // namespace

hsm::SecureBytes key_check_plaintext() {
  // SHA-256("IMS-CONF-KMS/1 key check value"): public, fixed, and not a weak key.
  const hsm::Bytes label = protocol_label("key check value");
  hsm::SecureBytes digest(32);
  unsigned int length = 0;
  if (EVP_Digest(label.data(), label.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != 32) {
    throw hsm::Error(hsm::ErrorKind::software, "SHA-256", "key check value");
  }
  return digest;
}

hsm::Bytes derive_key_check_value(hsm::Session& session, const TokenProfile& profile,
                                  CK_OBJECT_HANDLE key) {
  hsm::AttributeTemplate child;
  child.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, false)
      .set_bool(CKA_ENCRYPT, true)
      .set_bool(CKA_DECRYPT, false)
      .set_bool(CKA_DERIVE, false)
      .set_bool(CKA_WRAP, false)
      .set_bool(CKA_UNWRAP, false)
      .set_bool(CKA_SIGN, false)
      .set_bool(CKA_VERIFY, false);
  hsm::ObjectGuard check(session, derive(session, profile, key, protocol_label("key check value"),
                                         {}, std::move(child)));
  hsm::Mechanism ecb(CKM_AES_ECB);
  const std::uint8_t zero_block[16] = {};
  return first_bytes(session.encrypt(ecb, check.get(), hsm::ByteView(zero_block, 16)));
}

hsm::Bytes wrap_check_blob(hsm::Session& session, const TokenProfile& profile,
                           CK_OBJECT_HANDLE key) {
  const hsm::SecureBytes value = key_check_plaintext();
  hsm::ObjectGuard check(session, session.create_object(check_key_template(value.view())));
  hsm::Mechanism mechanism(profile.wrap_mechanism);
  return session.wrap_key(mechanism, key, check.get());
}

bool unwraps_check_blob(hsm::Session& session, const TokenProfile& profile, CK_OBJECT_HANDLE key,
                        hsm::ByteView check_blob) {
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  try {
    handle =
        unwrap_aes_key(session, profile, key, check_blob, templates::root_key_in_transit(profile));
  } catch (const hsm::Error& error) {
    if (error.kind() == hsm::ErrorKind::pkcs11 &&
        (is_integrity_failure(profile.quirks, error.rv()) ||
         error.rv() == CKR_WRAPPED_KEY_LEN_RANGE)) {
      return false;
    }
    throw;
  }
  hsm::ObjectGuard unwrapped(session, handle);
  // Read the unwrapped value back through a one-time key of known value: it is public (V).
  hsm::SecureBytes kek(32);
  if (RAND_bytes(kek.data(), static_cast<int>(kek.size())) != 1) {
    throw hsm::Error(hsm::ErrorKind::software, "RAND_bytes", "key check value");
  }
  hsm::ObjectGuard kek_object(session, session.create_object(one_time_wrapping_key(kek.view())));
  hsm::Mechanism mechanism(profile.wrap_mechanism);
  const hsm::Bytes rewrapped = session.wrap_key(mechanism, kek_object.get(), unwrapped.get());
  const auto value = software_unwrap(kek.view(), rewrapped);
  const hsm::SecureBytes expected = key_check_plaintext();
  return value && value->size() == expected.size() &&
         CRYPTO_memcmp(value->data(), expected.data(), expected.size()) == 0;
}

hsm::Bytes software_key_check_value(hsm::ByteView key) {
  if (key.size() != 32) throw std::invalid_argument("a key check value needs an AES-256 key");
  std::uint8_t out[32] = {};
  int length = 0;
  const std::uint8_t zero_block[16] = {};
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  const bool ok = ctx != nullptr &&
                  EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr) == 1 &&
                  EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
                  EVP_EncryptUpdate(ctx, out, &length, zero_block, 16) == 1 && length == 16;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) throw hsm::Error(hsm::ErrorKind::software, "AES-ECB", "key check value");
  return first_bytes(hsm::ByteView(out, 16));
}

std::optional<hsm::Bytes> kms_key_check_value(hsm::Session& session, const TokenProfile& profile,
                                              std::string_view label) {
  const auto key = find_secret_key(session, label);
  if (!key) return std::nullopt;
  if (label == kMasterKeyLabel) return derive_key_check_value(session, profile, *key);
  if (label == kStorageKeyLabel) return first_bytes(wrap_check_blob(session, profile, *key));
  if (label != kTransportKeyLabel) return std::nullopt;
  hsm::AttributeTemplate match;
  match.set_ulong(CKA_CLASS, CKO_DATA).set_string(CKA_LABEL, std::string(kTransportCheckLabel));
  const auto check = session.find_one(std::move(match));
  if (!check) return std::nullopt;
  const hsm::Bytes blob = session.get_bytes(*check, CKA_VALUE);
  if (!unwraps_check_blob(session, profile, *key, blob)) return std::nullopt;
  return first_bytes(blob);
}

std::string key_check_value_hex(hsm::ByteView kcv) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t b : kcv) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

}  // namespace tokens
