// Token operations against both tokens: generate, AES-GCM with AAD, RFC 5649 wrap/unwrap,
// in-token derivation, each checked against OpenSSL computing the same thing in software.
#include <gtest/gtest.h>

#include <algorithm>

#include "openssl_reference.h"
#include "token_fixture.h"

namespace hsmtest {
namespace {

using hsm::AttributeTemplate;
using hsm::Bytes;
using hsm::Mechanism;
using hsm::Session;
namespace ref = reference;

Bytes as_bytes(const std::string& text) { return Bytes(text.begin(), text.end()); }
Bytes to_bytes(const hsm::SecureBytes& secure) {
  return Bytes(secure.view().begin(), secure.view().end());
}

AttributeTemplate secret_key(CK_KEY_TYPE type, bool sensitive, bool extractable) {
  AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, type)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, sensitive)
      .set_bool(CKA_EXTRACTABLE, extractable);
  return t;
}

// An AES-256 key with a value known to the test, so OpenSSL can check the token's work.
CK_OBJECT_HANDLE create_known_aes_key(Session& session, const Bytes& value,
                                      std::initializer_list<CK_ATTRIBUTE_TYPE> purposes,
                                      bool extractable = false) {
  AttributeTemplate t = secret_key(CKK_AES, true, extractable);
  t.set_bytes(CKA_VALUE, value);
  for (auto purpose : purposes) t.set_bool(purpose, true);
  return session.create_object(t);
}

// The template every derived child gets: sensitive always, extractable as intended.
AttributeTemplate derived_secret(std::size_t length) {
  AttributeTemplate t = secret_key(CKK_GENERIC_SECRET, true, true);
  t.set_ulong(CKA_VALUE_LEN, length);
  return t;
}

class CryptoTest : public TokenTest {
 protected:
  void SetUp() override {
    TokenTest::SetUp();
    session_ = std::make_unique<Session>(module_, slot_);
    session_->login(CKU_USER, token_->user_pin());
  }
  void TearDown() override {
    session_.reset();
    TokenTest::TearDown();
  }
  bool offers(CK_MECHANISM_TYPE mechanism) const {
    const auto list = module_->mechanisms(slot_);
    return std::find(list.begin(), list.end(), mechanism) != list.end();
  }
  // Wraps `key` (in the token) under a known KEK and returns what OpenSSL unwraps: the
  // token key's value, proven without ever reading CKA_VALUE.
  Bytes value_through_wrap(CK_OBJECT_HANDLE key, Bytes* blob = nullptr) {
    const Bytes kek = ref::random_bytes(32);
    const CK_OBJECT_HANDLE wrapping = create_known_aes_key(*session_, kek, {CKA_WRAP});
    Mechanism wrap(kwp());
    const Bytes wrapped = session_->wrap_key(wrap, wrapping, key);
    if (blob != nullptr) *blob = wrapped;
    session_->destroy(wrapping);
    return ref::kwp_unwrap(kek, wrapped);
  }
  std::unique_ptr<Session> session_;
};

TEST_P(CryptoTest, GeneratedKeyIsSensitiveAndNotExtractable) {
  Mechanism keygen(CKM_AES_KEY_GEN);
  AttributeTemplate t = secret_key(CKK_AES, true, false);
  t.set_ulong(CKA_VALUE_LEN, 32).set_bool(CKA_DECRYPT, true).set_string(CKA_LABEL, "gen-test");
  const CK_OBJECT_HANDLE key = session_->generate_key(keygen, t);
  EXPECT_TRUE(session_->get_bool(key, CKA_SENSITIVE));
  EXPECT_FALSE(session_->get_bool(key, CKA_EXTRACTABLE));
  EXPECT_TRUE(session_->get_bool(key, CKA_ALWAYS_SENSITIVE));
  EXPECT_TRUE(session_->get_bool(key, CKA_NEVER_EXTRACTABLE));
  EXPECT_EQ(session_->get_ulong(key, CKA_VALUE_LEN), 32u);
  EXPECT_EQ(session_->get_string(key, CKA_LABEL), "gen-test");
  try {
    session_->get_bytes(key, CKA_VALUE);
    FAIL() << "the token revealed a sensitive key's value";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), CKR_ATTRIBUTE_SENSITIVE);
  }
}

TEST_P(CryptoTest, GcmEncryptDecryptWithAadAndTamperDetection) {
  const Bytes key_value = ref::random_bytes(32);
  const CK_OBJECT_HANDLE key =
      create_known_aes_key(*session_, key_value, {CKA_ENCRYPT, CKA_DECRYPT});
  const Bytes iv = ref::random_bytes(12);
  const Bytes aad = as_bytes("sip:alice@ims.example.net|sip:bob@ims.example.net");
  const Bytes plaintext = ref::random_bytes(45);

  auto encrypt = Mechanism::aes_gcm(iv, aad);
  const Bytes ciphertext = session_->encrypt(encrypt, key, plaintext);
  ASSERT_EQ(ciphertext.size(), plaintext.size() + 16);
  EXPECT_EQ(ciphertext, ref::gcm_encrypt(key_value, iv, aad, plaintext));

  // OpenSSL's ciphertext opens in the token.
  const Bytes from_openssl = ref::gcm_encrypt(key_value, iv, aad, as_bytes("from openssl"));
  auto decrypt = Mechanism::aes_gcm(iv, aad);
  EXPECT_EQ(to_bytes(session_->decrypt(decrypt, key, from_openssl)), as_bytes("from openssl"));

  Bytes tampered = ciphertext;
  tampered[3] ^= 0x01;
  auto decrypt_tampered = Mechanism::aes_gcm(iv, aad);
  EXPECT_THROW(session_->decrypt(decrypt_tampered, key, tampered), hsm::Error);

  Bytes other_aad = aad;
  other_aad.back() ^= 0x01;
  auto decrypt_wrong_aad = Mechanism::aes_gcm(iv, other_aad);
  try {
    session_->decrypt(decrypt_wrong_aad, key, ciphertext);
    FAIL() << "GCM accepted the wrong associated data";
  } catch (const hsm::Error& error) {
    // SoftHSM says CKR_GENERAL_ERROR, NSS CKR_ENCRYPTED_DATA_INVALID (TOKEN-NOTES.md).
    EXPECT_EQ(error.rv(), is_nss() ? CKR_ENCRYPTED_DATA_INVALID : CKR_GENERAL_ERROR);
    EXPECT_EQ(error.function(), "C_Decrypt");
  }
  // The session still works after the failed decryption.
  auto decrypt_again = Mechanism::aes_gcm(iv, aad);
  EXPECT_EQ(to_bytes(session_->decrypt(decrypt_again, key, ciphertext)), plaintext);
}

TEST_P(CryptoTest, Rfc5649WrapIsByteIdenticalWithOpenSsl) {
  const Bytes kek = ref::random_bytes(32);
  const CK_OBJECT_HANDLE wrapping = create_known_aes_key(*session_, kek, {CKA_WRAP});
  // 600 bytes wrap into more than Session::wrap_key's first buffer: the retry path.
  for (std::size_t length : {16u, 30u, 32u, 600u}) {
    SCOPED_TRACE("key length " + std::to_string(length));
    const Bytes value = ref::random_bytes(length);
    AttributeTemplate t = secret_key(CKK_GENERIC_SECRET, true, true);
    t.set_bytes(CKA_VALUE, value);
    const CK_OBJECT_HANDLE key = session_->create_object(t);
    Mechanism wrap(kwp());
    const Bytes wrapped = session_->wrap_key(wrap, wrapping, key);
    // SoftHSM zero-pads a 30-byte secret to 32 before wrapping (TOKEN-NOTES.md).
    Bytes expected_value = value;
    if (!is_nss() && length % 8 != 0) expected_value.resize((length + 7) / 8 * 8, 0);
    EXPECT_EQ(wrapped, ref::kwp_wrap(kek, expected_value));
    EXPECT_EQ(wrapped.size(), (length + 7) / 8 * 8 + 8);
    session_->destroy(key);
  }
}

TEST_P(CryptoTest, Rfc5649UnwrapImportsAKeyWrappedByOpenSsl) {
  const Bytes kek = ref::random_bytes(32);
  const CK_OBJECT_HANDLE unwrapping = create_known_aes_key(*session_, kek, {CKA_UNWRAP, CKA_WRAP});
  const Bytes key_value = ref::random_bytes(32);
  const Bytes blob = ref::kwp_wrap(kek, key_value);

  Mechanism unwrap(kwp());
  AttributeTemplate t = secret_key(CKK_AES, true, true);
  t.set_bool(CKA_ENCRYPT, true).set_bool(CKA_DECRYPT, true);
  const CK_OBJECT_HANDLE imported = session_->unwrap_key(unwrap, unwrapping, blob, t);
  EXPECT_TRUE(session_->get_bool(imported, CKA_SENSITIVE));
  // SoftHSM 2.6.1 leaves CKA_VALUE_LEN at 0 on an unwrapped key; NSS fills it in.
  EXPECT_EQ(session_->get_ulong(imported, CKA_VALUE_LEN), is_nss() ? 32u : 0u);

  // The imported key encrypts like the key OpenSSL wrapped...
  const Bytes iv = ref::random_bytes(12);
  auto gcm = Mechanism::aes_gcm(iv, {});
  const Bytes ciphertext = session_->encrypt(gcm, imported, as_bytes("media"));
  EXPECT_EQ(ref::gcm_decrypt(key_value, iv, {}, ciphertext), as_bytes("media"));
  // ...and wraps back to the same blob.
  Mechanism wrap(kwp());
  EXPECT_EQ(session_->wrap_key(wrap, unwrapping, imported), blob);

  // A corrupted blob is refused.
  Bytes corrupted = blob;
  corrupted[5] ^= 0x80;
  Mechanism unwrap_again(kwp());
  EXPECT_THROW(session_->unwrap_key(unwrap_again, unwrapping, corrupted, t), hsm::Error);
}

TEST_P(CryptoTest, AesEcbEncryptDataDeriveMatchesOpenSsl) {
  // TOKEN-NOTES.md: NSS does not advertise CKM_AES_ECB_ENCRYPT_DATA but performs it.
  const Bytes master = ref::random_bytes(32);
  const CK_OBJECT_HANDLE base = create_known_aes_key(*session_, master, {CKA_DERIVE});
  Bytes info = as_bytes("kms media key");
  const Bytes context = ref::random_bytes(16);
  info.insert(info.end(), context.begin(), context.end());
  const Bytes data = ref::sha256(info);

  auto derive = Mechanism::aes_ecb_encrypt_data(data);
  const CK_OBJECT_HANDLE child = session_->derive_key(derive, base, derived_secret(32));
  EXPECT_TRUE(session_->get_bool(child, CKA_SENSITIVE));
  EXPECT_EQ(value_through_wrap(child), ref::aes256_ecb(master, data));
}

TEST_P(CryptoTest, Sp800108CounterKdfMatchesOpenSslKbkdf) {
  if (!offers(CKM_SP800_108_COUNTER_KDF)) {
    ASSERT_FALSE(is_nss()) << "NSS softoken 3.87 offers CKM_SP800_108_COUNTER_KDF";
    GTEST_SKIP() << "SoftHSM 2.6.1 has no CKM_SP800_108_COUNTER_KDF (TOKEN-NOTES.md)";
  }
  const Bytes master = ref::random_bytes(32);
  // NSS requires an extractable base key for an extractable child (TOKEN-NOTES.md).
  const CK_OBJECT_HANDLE base = create_known_aes_key(*session_, master, {CKA_DERIVE}, true);
  const Bytes label = as_bytes("kms response key");
  const Bytes context = ref::random_bytes(24);
  for (std::size_t length : {30u, 32u}) {
    SCOPED_TRACE("length " + std::to_string(length));
    auto derive = Mechanism::sp800_108_counter(CKM_AES_CMAC, label, context);
    const CK_OBJECT_HANDLE child = session_->derive_key(derive, base, derived_secret(length));
    EXPECT_TRUE(session_->get_bool(child, CKA_SENSITIVE));
    EXPECT_EQ(value_through_wrap(child), ref::kbkdf_cmac(master, label, context, length));
  }
}

TEST_P(CryptoTest, DeriveThenWrapChainMatchesOpenSsl) {
  // The TOKEN-NOTES.md chain: K = derive(M, D1) and W = derive(S, D2), then K wrapped under W.
  const Bytes m = ref::random_bytes(32), s = ref::random_bytes(32);
  const CK_OBJECT_HANDLE master = create_known_aes_key(*session_, m, {CKA_DERIVE});
  const CK_OBJECT_HANDLE subscriber = create_known_aes_key(*session_, s, {CKA_DERIVE});
  const Bytes d1 = ref::sha256(as_bytes("media|conference-1")),
              d2 = ref::sha256(as_bytes("response|nonce"));
  auto derive_k = Mechanism::aes_ecb_encrypt_data(d1);
  const CK_OBJECT_HANDLE k = session_->derive_key(derive_k, master, derived_secret(32));
  hsm::ObjectGuard k_guard(*session_, k);
  AttributeTemplate w_template = secret_key(CKK_AES, true, false);
  w_template.set_ulong(CKA_VALUE_LEN, 32).set_bool(CKA_WRAP, true);
  auto derive_w = Mechanism::aes_ecb_encrypt_data(d2);
  hsm::ObjectGuard w(*session_, session_->derive_key(derive_w, subscriber, w_template));
  Mechanism wrap(kwp());
  const Bytes blob = session_->wrap_key(wrap, w.get(), k);
  ASSERT_EQ(blob.size(), 40u);
  const Bytes expected_k = ref::aes256_ecb(m, d1);
  EXPECT_EQ(blob, ref::kwp_wrap(ref::aes256_ecb(s, d2), expected_k));
  EXPECT_EQ(ref::kwp_unwrap(ref::aes256_ecb(s, d2), blob), expected_k);
}

TEST_P(CryptoTest, ObjectGuardDestroysUnlessReleased) {
  Mechanism keygen(CKM_AES_KEY_GEN);
  AttributeTemplate t = secret_key(CKK_AES, true, false);
  t.set_ulong(CKA_VALUE_LEN, 32).set_bool(CKA_ENCRYPT, true);
  CK_OBJECT_HANDLE destroyed = CK_INVALID_HANDLE, kept = CK_INVALID_HANDLE;
  {
    hsm::ObjectGuard guard(*session_, session_->generate_key(keygen, t));
    destroyed = guard.get();
    EXPECT_EQ(session_->get_ulong(destroyed, CKA_CLASS), CKO_SECRET_KEY);
  }
  {
    hsm::ObjectGuard guard(*session_, session_->generate_key(keygen, t));
    hsm::ObjectGuard moved(std::move(guard));
    kept = moved.release();
  }
  try {
    session_->get_ulong(destroyed, CKA_CLASS);
    FAIL() << "the guarded object still exists";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), CKR_OBJECT_HANDLE_INVALID);
  }
  EXPECT_EQ(session_->get_ulong(kept, CKA_CLASS), CKO_SECRET_KEY);
  session_->destroy(kept);
}

TEST_P(CryptoTest, FindsObjectsByLabelAndId) {
  Mechanism keygen(CKM_AES_KEY_GEN);
  for (int i = 0; i < 3; ++i) {
    AttributeTemplate t = secret_key(CKK_AES, true, false);
    t.set_ulong(CKA_VALUE_LEN, 16)
        .set_bool(CKA_ENCRYPT, true)
        .set_string(CKA_LABEL, "many")
        .set_bytes(CKA_ID, Bytes{static_cast<std::uint8_t>(i)});
    session_->generate_key(keygen, t);
  }
  AttributeTemplate by_label;
  by_label.set_string(CKA_LABEL, "many");
  EXPECT_EQ(session_->find(by_label).size(), 3u);
  EXPECT_EQ(session_->find(by_label, 2).size(), 2u);
  EXPECT_THROW(session_->find_one(by_label), hsm::Error);
  AttributeTemplate by_id = by_label;
  by_id.set_bytes(CKA_ID, Bytes{1});
  ASSERT_TRUE(session_->find_one(by_id).has_value());
  AttributeTemplate missing;
  missing.set_string(CKA_LABEL, "nothing-like-this");
  EXPECT_FALSE(session_->find_one(missing).has_value());
}

HSM_INSTANTIATE_FOR_TOKENS(CryptoTest);

}  // namespace
}  // namespace hsmtest
