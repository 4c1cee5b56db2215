// Key custody on the real tokens (docs/ARCHITECTURE.md "Key custody"): what a holder of the
// user PIN can and cannot do with the KMS's keys. Each attack is tried on both tokens. Where
// a token enforces the rule the attack must fail with the token's CK_RV; where it does not
// (NSS softoken, a portability token), the test asserts that the attack succeeds, the
// documented gap, so that a change in either token shows up here and not in production.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "hsm/error.h"
#include "key_proof.h"
#include "software_kdf.h"
#include "token_fixture.h"
#include "tokens/key_templates.h"

namespace {

using testkdf::Bytes;
using tokens::IdentityKind;

constexpr const char* kIdentity = "sip:alice@ims.example.net";

class KeyCustodyTest : public tokentest::TokenTest {
 protected:
  bool softhsm() const { return GetParam() == testsupport::TokenKind::softhsm; }
  const tokens::TokenProfile& profile() const { return context_->profile(); }

  // A key of known value the test can wrap under and unwrap in software.
  CK_OBJECT_HANDLE known_wrapping_key(hsm::Session& session, const Bytes& value) {
    hsm::AttributeTemplate t;
    t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
        .set_ulong(CKA_KEY_TYPE, CKK_AES)
        .set_bool(CKA_TOKEN, false)
        .set_bool(CKA_PRIVATE, true)
        .set_bool(CKA_SENSITIVE, true)
        .set_bool(CKA_EXTRACTABLE, false)
        .set_bool(CKA_WRAP, true)
        .set_bytes(CKA_VALUE, value);
    return session.create_object(std::move(t));
  }

  // Unwraps under `unwrapping_key` with `attributes`: CKR_OK or the token's refusal.
  CK_RV try_unwrap(hsm::Session& session, CK_OBJECT_HANDLE unwrapping_key, const Bytes& wrapped,
                   hsm::AttributeTemplate attributes, CK_OBJECT_HANDLE* out = nullptr) {
    try {
      const CK_OBJECT_HANDLE key = tokens::unwrap_aes_key(session, profile(), unwrapping_key,
                                                          wrapped, std::move(attributes));
      if (out != nullptr) {
        *out = key;
      } else {
        session.destroy(key);
      }
      return CKR_OK;
    } catch (const hsm::Error& error) {
      if (error.kind() != hsm::ErrorKind::pkcs11) throw;
      return error.rv();
    }
  }

  static CK_RV try_call(const std::function<void()>& call) {
    try {
      call();
      return CKR_OK;
    } catch (const hsm::Error& error) {
      if (error.kind() != hsm::ErrorKind::pkcs11) throw;
      return error.rv();
    }
  }
};

std::string rv(CK_RV value) { return hsm::rv_name(value); }

// The storage key unwraps a stored root key only the way the KMS uses it: sensitive, not
// extractable, CKA_DERIVE only, not modifiable. A PIN holder asking for an extractable or
// readable copy of a database blob is refused on SoftHSM (CKA_UNWRAP_TEMPLATE); NSS enforces
// no unwrap template, so there the copy comes out extractable and is exported.
TEST_P(KeyCustodyTest, StoredRootKeyUnwrapsOnlyAsTheKmsUsesIt) {
  tokentest::create_kms_keys(*context_);
  const Bytes value = testkdf::random_bytes(32);
  const Bytes kek = testkdf::random_bytes(32);
  context_->pool().run([&](hsm::Session& session) {
    const CK_OBJECT_HANDLE storage = context_->pool().resolve(session, tokens::storage_key_ref());
    hsm::AttributeTemplate transit = tokens::templates::root_key_in_transit(profile());
    transit.set_bytes(CKA_VALUE, value);
    hsm::ObjectGuard in_transit(session, session.create_object(std::move(transit)));
    hsm::Mechanism wrap(profile().wrap_mechanism);
    const Bytes blob = session.wrap_key(wrap, storage, in_transit.get());
    ASSERT_EQ(blob.size(), 40u);

    const auto as_used = [&] {
      return tokens::templates::root_key(profile(), IdentityKind::subscriber, kIdentity, 1, false);
    };
    struct Attack {
      const char* what;
      hsm::AttributeTemplate attributes;
    };
    std::vector<Attack> attacks;
    attacks.push_back({"extractable", as_used().set_bool(CKA_EXTRACTABLE, true)});
    attacks.push_back({"not sensitive", as_used().set_bool(CKA_SENSITIVE, false)});
    attacks.push_back({"extractable and not sensitive",
                       as_used().set_bool(CKA_EXTRACTABLE, true).set_bool(CKA_SENSITIVE, false)});
    attacks.push_back({"a decryption key", as_used().set_bool(CKA_DECRYPT, true)});
    attacks.push_back({"a wrapping key", as_used().set_bool(CKA_WRAP, true)});
    attacks.push_back({"modifiable", as_used().set_bool(CKA_MODIFIABLE, true)});
    hsm::AttributeTemplate minimal;  // leaves sensitivity and extractability to the token
    minimal.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
        .set_ulong(CKA_KEY_TYPE, CKK_AES)
        .set_bool(CKA_TOKEN, false)
        .set_bool(CKA_DERIVE, true);
    attacks.push_back({"token defaults", minimal});
    for (Attack& attack : attacks) {
      SCOPED_TRACE(attack.what);
      CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
      const CK_RV result = try_unwrap(session, storage, blob, std::move(attack.attributes), &key);
      if (softhsm()) {
        EXPECT_EQ(rv(result), rv(CKR_TEMPLATE_INCONSISTENT));
        continue;
      }
      // NSS softoken: the unwrap template is not there (TokenQuirks::supports_wrap_templates
      // is false) and would not be enforced; the request is granted.
      ASSERT_EQ(rv(result), rv(CKR_OK));
      hsm::ObjectGuard granted(session, key);
      if (session.get_bool(key, CKA_EXTRACTABLE)) {
        // ...and the stored root key leaves the token: wrapped under a key of known value.
        hsm::ObjectGuard wrapping(session, known_wrapping_key(session, kek));
        hsm::Mechanism export_wrap(profile().wrap_mechanism);
        EXPECT_EQ(testkdf::unwrap_pad(kek, session.wrap_key(export_wrap, wrapping.get(), key)),
                  value);
      }
    }

    // As the KMS asks for it, on both: usable (it holds the value), and on SoftHSM not
    // exportable.
    CK_OBJECT_HANDLE used = CK_INVALID_HANDLE;
    ASSERT_EQ(rv(try_unwrap(session, storage, blob, as_used(), &used)), rv(CKR_OK));
    hsm::ObjectGuard used_guard(session, used);
    EXPECT_FALSE(session.get_bool(used, CKA_EXTRACTABLE));
    EXPECT_TRUE(session.get_bool(used, CKA_SENSITIVE));
    EXPECT_FALSE(session.get_bool(used, CKA_MODIFIABLE));
    EXPECT_TRUE(testkdf::key_holds(*context_, used, value));
    hsm::ObjectGuard wrapping(session, known_wrapping_key(session, kek));
    hsm::Mechanism export_wrap(profile().wrap_mechanism);
    const CK_RV exported = try_call([&] { session.wrap_key(export_wrap, wrapping.get(), used); });
    if (softhsm()) {
      EXPECT_EQ(rv(exported), rv(CKR_KEY_UNEXTRACTABLE));
    } else {
      EXPECT_EQ(rv(exported), rv(CKR_OK));  // NSS does not enforce CKA_EXTRACTABLE=FALSE
    }
  });
}

// The storage and personalisation keys wrap root keys only (CKA_WRAP_TEMPLATE): not a
// media key, not a key for encryption. Enforced by SoftHSM (CKR_KEY_NOT_WRAPPABLE), not by
// NSS.
TEST_P(KeyCustodyTest, StorageAndPersonalisationKeysWrapNothingButRootKeys) {
  tokentest::create_kms_keys(*context_);
  const Bytes transport_value = testkdf::random_bytes(32);
  context_->pool().run([&](hsm::Session& session) {
    const CK_OBJECT_HANDLE storage = context_->pool().resolve(session, tokens::storage_key_ref());
    hsm::AttributeTemplate t = tokens::templates::transport_key(profile());
    t.set_bytes(CKA_VALUE, transport_value).set_bool(CKA_TOKEN, false);
    hsm::ObjectGuard transport(session, session.create_object(std::move(t)));
    hsm::AttributeTemplate p = tokens::templates::personalisation_key(profile(), "p1");
    p.set_bool(CKA_TOKEN, false);
    hsm::ObjectGuard personalisation(
        session, tokens::unwrap_aes_key(
                     session, profile(), transport.get(),
                     testkdf::wrap_pad(transport_value, testkdf::random_bytes(32)), std::move(p)));
    hsm::Mechanism wrap(profile().wrap_mechanism);
    hsm::ObjectGuard root(session, tokens::generate_aes_key(
                                       session, tokens::templates::root_key_in_transit(profile())));
    for (const CK_OBJECT_HANDLE wrapping : {storage, personalisation.get()}) {
      EXPECT_EQ(session.wrap_key(wrap, wrapping, root.get()).size(), 40u);
    }

    hsm::AttributeTemplate media = tokens::templates::media_key();
    media.set_bytes(CKA_VALUE, testkdf::random_bytes(32));
    hsm::ObjectGuard media_key(session, session.create_object(std::move(media)));
    hsm::AttributeTemplate cipher = tokens::templates::root_key_in_transit(profile());
    cipher.set_bool(CKA_DERIVE, false).set_bool(CKA_ENCRYPT, true).set_bool(CKA_DECRYPT, true);
    hsm::ObjectGuard cipher_key(session, tokens::generate_aes_key(session, std::move(cipher)));
    for (const CK_OBJECT_HANDLE wrapping : {storage, personalisation.get()}) {
      for (const CK_OBJECT_HANDLE key : {media_key.get(), cipher_key.get()}) {
        const CK_RV result = try_call([&] { session.wrap_key(wrap, wrapping, key); });
        EXPECT_EQ(rv(result), rv(softhsm() ? CKR_KEY_NOT_WRAPPABLE : CKR_OK));
      }
    }
  });
}

// The transport key unwraps only sensitive, fixed keys that cannot encrypt, decrypt or
// unwrap (CKA_UNWRAP_TEMPLATE). By design it still unwraps extractable root keys in
// transit (they must be wrapped under the storage and personalisation keys) and CKA_WRAP
// personalisation keys. Enforced by SoftHSM, not by NSS.
TEST_P(KeyCustodyTest, TransportKeyUnwrapsOnlySensitiveFixedKeys) {
  const Bytes transport_value = testkdf::random_bytes(32);
  const Bytes wrapped = testkdf::wrap_pad(transport_value, testkdf::random_bytes(32));
  context_->pool().run([&](hsm::Session& session) {
    hsm::AttributeTemplate t = tokens::templates::transport_key(profile());
    t.set_bytes(CKA_VALUE, transport_value);
    hsm::ObjectGuard transport(session, session.create_object(std::move(t)));
    const auto in_transit = [&] { return tokens::templates::root_key_in_transit(profile()); };
    EXPECT_EQ(rv(try_unwrap(session, transport.get(), wrapped, in_transit())), rv(CKR_OK));
    hsm::AttributeTemplate personalisation =
        tokens::templates::personalisation_key(profile(), "p1");
    personalisation.set_bool(CKA_TOKEN, false);
    EXPECT_EQ(rv(try_unwrap(session, transport.get(), wrapped, std::move(personalisation))),
              rv(CKR_OK));

    struct Attack {
      const char* what;
      hsm::AttributeTemplate attributes;
    };
    std::vector<Attack> attacks;
    attacks.push_back({"not sensitive", in_transit().set_bool(CKA_SENSITIVE, false)});
    attacks.push_back({"a decryption key", in_transit().set_bool(CKA_DECRYPT, true)});
    attacks.push_back({"an unwrapping key", in_transit().set_bool(CKA_UNWRAP, true)});
    attacks.push_back({"modifiable", in_transit().set_bool(CKA_MODIFIABLE, true)});
    for (Attack& attack : attacks) {
      SCOPED_TRACE(attack.what);
      const CK_RV result =
          try_unwrap(session, transport.get(), wrapped, std::move(attack.attributes));
      EXPECT_EQ(rv(result), rv(softhsm() ? CKR_TEMPLATE_INCONSISTENT : CKR_OK));
    }
  });
}

// No long-term key can be widened after creation (CKA_MODIFIABLE=FALSE): not its usage
// flags, not its extractability, not its label. Both tokens enforce it on
// C_SetAttributeValue (SoftHSM: CKR_ACTION_PROHIBITED, NSS: CKR_ATTRIBUTE_READ_ONLY). A
// copy with other attributes (C_CopyObject) is refused by SoftHSM (CKA_COPYABLE=FALSE);
// NSS refuses CKA_COPYABLE at creation and copies with any attributes asked for.
TEST_P(KeyCustodyTest, LongTermKeysCannotBeWidened) {
  const Bytes transport_value = testkdf::random_bytes(32);
  context_->pool().run([&](hsm::Session& session) {
    hsm::ObjectGuard master(
        session, tokens::generate_aes_key(session, tokens::templates::master_key(profile())));
    hsm::ObjectGuard storage(
        session, tokens::generate_aes_key(session, tokens::templates::storage_key(profile())));
    hsm::AttributeTemplate t = tokens::templates::transport_key(profile());
    t.set_bytes(CKA_VALUE, transport_value);
    hsm::ObjectGuard transport(session, session.create_object(std::move(t)));
    hsm::ObjectGuard personalisation(
        session,
        tokens::unwrap_aes_key(session, profile(), transport.get(),
                               testkdf::wrap_pad(transport_value, testkdf::random_bytes(32)),
                               tokens::templates::personalisation_key(profile(), "p1")));
    hsm::ObjectGuard in_transit(
        session,
        tokens::generate_aes_key(session, tokens::templates::root_key_in_transit(profile())));
    hsm::Mechanism wrap(profile().wrap_mechanism);
    hsm::ObjectGuard token_root(
        session,
        tokens::unwrap_aes_key(
            session, profile(), storage.get(),
            session.wrap_key(wrap, storage.get(), in_transit.get()),
            tokens::templates::root_key(profile(), IdentityKind::subscriber, kIdentity, 1, true)));
    // A control: the storage key's template without CKA_MODIFIABLE=FALSE can be widened.
    hsm::AttributeTemplate modifiable = tokens::templates::storage_key(profile());
    modifiable.set_bool(CKA_MODIFIABLE, true).set_bool(CKA_TOKEN, false);
    hsm::ObjectGuard control(session, tokens::generate_aes_key(session, std::move(modifiable)));
    hsm::AttributeTemplate widen;
    widen.set_bool(CKA_DECRYPT, true);
    session.set_attributes(control.get(), widen);
    EXPECT_TRUE(session.get_bool(control.get(), CKA_DECRYPT));

    const CK_RV refused = softhsm() ? CKR_ACTION_PROHIBITED : CKR_ATTRIBUTE_READ_ONLY;
    const struct {
      const char* name;
      CK_OBJECT_HANDLE handle;
    } keys[] = {{"master", master.get()},
                {"storage", storage.get()},
                {"transport", transport.get()},
                {"personalisation", personalisation.get()},
                {"token-mode root", token_root.get()}};
    for (const auto& key : keys) {
      SCOPED_TRACE(key.name);
      EXPECT_FALSE(session.get_bool(key.handle, CKA_MODIFIABLE));
      for (const CK_ATTRIBUTE_TYPE flag :
           {CKA_DECRYPT, CKA_ENCRYPT, CKA_WRAP, CKA_UNWRAP, CKA_DERIVE, CKA_EXTRACTABLE}) {
        SCOPED_TRACE(flag);
        if (session.get_bool(key.handle, flag)) continue;  // its purpose, or M on NSS
        hsm::AttributeTemplate change;
        change.set_bool(flag, true);
        EXPECT_EQ(rv(try_call([&] { session.set_attributes(key.handle, change); })), rv(refused));
        EXPECT_FALSE(session.get_bool(key.handle, flag));
      }
      hsm::AttributeTemplate relabel;
      relabel.set_string(CKA_LABEL, "kms/renamed");
      EXPECT_EQ(rv(try_call([&] { session.set_attributes(key.handle, relabel); })), rv(refused));

      // Copies: refused on SoftHSM; on NSS a copy takes whatever attributes it is given.
      hsm::AttributeTemplate widened_copy;
      widened_copy.set_bool(CKA_TOKEN, false).set_bool(CKA_DECRYPT, true);
      CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
      const CK_RV copied = try_call([&] { copy = session.copy_object(key.handle, widened_copy); });
      if (softhsm()) {
        EXPECT_EQ(rv(copied), rv(CKR_ACTION_PROHIBITED));
        EXPECT_FALSE(session.get_bool(key.handle, CKA_COPYABLE));
      } else {
        ASSERT_EQ(rv(copied), rv(CKR_OK));
        hsm::ObjectGuard copy_guard(session, copy);
        EXPECT_TRUE(session.get_bool(copy, CKA_DECRYPT));
      }
    }
  });
}

// Why the quirks (and the template order) are what they are: what each token refuses,
// measured. A token that stops refusing it makes this test fail; then the quirk can go.
TEST_P(KeyCustodyTest, QuirksMatchWhatTheTokenRefuses) {
  const tokens::TokenQuirks& quirks = profile().quirks;
  tokens::TokenProfile standard = profile();
  standard.quirks = tokens::quirks_by_name("standard");
  const Bytes transport_value = testkdf::random_bytes(32);
  context_->pool().run([&](hsm::Session& session) {
    if (softhsm()) {
      EXPECT_TRUE(quirks.supports_copyable);
      EXPECT_TRUE(quirks.supports_wrap_templates);
      // SoftHSM applies an unwrap template in order and refuses what follows
      // CKA_MODIFIABLE=FALSE; tokens::unwrap_aes_key moves it to the end.
      hsm::AttributeTemplate plain;
      plain.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
          .set_ulong(CKA_KEY_TYPE, CKK_AES)
          .set_bool(CKA_TOKEN, false)
          .set_bool(CKA_UNWRAP, true)
          .set_bytes(CKA_VALUE, transport_value);
      hsm::ObjectGuard unwrapping(session, session.create_object(std::move(plain)));
      hsm::AttributeTemplate labelled = tokens::templates::root_key_in_transit(profile());
      labelled.set_string(CKA_LABEL, "after CKA_MODIFIABLE");
      const Bytes blob = testkdf::wrap_pad(transport_value, testkdf::random_bytes(32));
      hsm::Mechanism unwrap(profile().wrap_mechanism);
      EXPECT_EQ(rv(try_call([&] {
                  hsm::ObjectGuard key(
                      session, session.unwrap_key(unwrap, unwrapping.get(), blob, labelled));
                })),
                rv(CKR_ATTRIBUTE_READ_ONLY));
      EXPECT_EQ(rv(try_unwrap(session, unwrapping.get(), blob, labelled)), rv(CKR_OK));
    } else {
      EXPECT_FALSE(quirks.supports_copyable);
      EXPECT_FALSE(quirks.supports_wrap_templates);
      // CKA_COPYABLE on a token object (all long-term keys are): refused at creation.
      hsm::AttributeTemplate copyable = tokens::templates::storage_key(standard);
      copyable.set_string(CKA_LABEL, "kms/copyable-test");
      CK_OBJECT_HANDLE created = CK_INVALID_HANDLE;
      EXPECT_EQ(rv(try_call([&] { created = tokens::generate_aes_key(session, copyable); })),
                rv(CKR_GENERAL_ERROR));
      if (created != CK_INVALID_HANDLE) session.destroy(created);
      // An unwrap template: accepted and stored, but not enforced (an extractable,
      // readable copy of what it wraps comes out).
      tokens::TokenProfile with_templates = profile();
      with_templates.quirks.supports_wrap_templates = true;
      hsm::AttributeTemplate st = tokens::templates::storage_key(with_templates);
      st.set_bool(CKA_TOKEN, false);
      hsm::ObjectGuard storage(session, tokens::generate_aes_key(session, std::move(st)));
      hsm::ObjectGuard root(
          session,
          tokens::generate_aes_key(session, tokens::templates::root_key_in_transit(profile())));
      hsm::Mechanism wrap(profile().wrap_mechanism);
      const Bytes blob = session.wrap_key(wrap, storage.get(), root.get());
      EXPECT_EQ(rv(try_unwrap(session, storage.get(), blob,
                              tokens::templates::root_key(profile(), IdentityKind::subscriber,
                                                          kIdentity, 1, false)
                                  .set_bool(CKA_EXTRACTABLE, true)
                                  .set_bool(CKA_SENSITIVE, false))),
                rv(CKR_OK));
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Tokens, KeyCustodyTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         tokentest::kind_param_name);

}  // namespace
