// TokenContext against real tokens: profile selection, KDF byte-identical with the
// software reference, key templates as created in the token.
#include <gtest/gtest.h>

#include "hsm/error.h"
#include "software_kdf.h"
#include "token_fixture.h"
#include "tokens/kdf.h"

namespace {

using testkdf::Bytes;
using tokentest::TokenTest;

// A secret key of known value, for comparing in-token results with software.
CK_OBJECT_HANDLE known_key(hsm::Session& session, const Bytes& value, CK_ATTRIBUTE_TYPE purpose,
                           bool extractable) {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, extractable)
      .set_bool(purpose, true)
      .set_bytes(CKA_VALUE, value);
  return session.create_object(std::move(t));
}

TEST_P(TokenTest, OpensTheModuleTheUriNamesWhenNoModuleIsConfigured) {
  tokens::TokenConfig config = config_;
  config.uri += (config.uri.find('?') == std::string::npos ? "?" : "&") +
                std::string("module-path=") + config_.module;
  config.module.clear();
  context_.reset();  // NSS: one C_Initialize per process at a time
  const auto opened = tokens::TokenContext::open(config);
  EXPECT_EQ(opened->module()->library_path(), config_.module);
  EXPECT_EQ(opened->profile().name, token_->profile_name());
}

TEST_P(TokenTest, SelectsTheProfileTheTokenOffers) {
  EXPECT_EQ(context_->profile().name, token_->profile_name());
  if (GetParam() == testsupport::TokenKind::nss) {
    EXPECT_EQ(context_->profile().id, tokens::ProfileId::sp800_108_cmac);
    EXPECT_EQ(context_->profile().wrap_mechanism, CKM_AES_KEY_WRAP_KWP);  // not NSS's 0x210A
    EXPECT_TRUE(context_->profile().extractable_base_for_extractable_children);
  } else {
    EXPECT_EQ(context_->profile().id, tokens::ProfileId::aes_ecb_sha256);
    EXPECT_EQ(context_->profile().wrap_mechanism, CKM_AES_KEY_WRAP_PAD);
  }
}

TEST_P(TokenTest, DetectsTheTokensQuirksAndTheConfigurationCanOverrideThem) {
  const tokens::TokenQuirks& quirks = context_->profile().quirks;
  if (GetParam() == testsupport::TokenKind::softhsm) {
    EXPECT_EQ(quirks.name, "softhsm2");
    EXPECT_TRUE(quirks.general_error_is_integrity_failure);
  } else {
    EXPECT_EQ(quirks.name, "nss");
    EXPECT_FALSE(quirks.general_error_is_integrity_failure);
    EXPECT_FALSE(quirks.supports_copyable);
  }
  tokens::TokenConfig config = config_;
  config.quirks = GetParam() == testsupport::TokenKind::softhsm ? "standard" : "softhsm2";
  context_.reset();  // NSS: one C_Initialize per process at a time
  const auto overridden = tokens::TokenContext::open(config);
  EXPECT_EQ(overridden->profile().quirks.name, config.quirks);
}

TEST_P(TokenTest, NamedProfileTheTokenLacksFailsNamingTheMechanism) {
  tokens::TokenConfig config = config_;
  config.profile =
      GetParam() == testsupport::TokenKind::softhsm ? "sp800-108-cmac" : "aes-ecb-sha256";
  context_.reset();  // NSS: one C_Initialize per process at a time
  try {
    tokens::TokenContext::open(config);
    FAIL() << "expected MissingMechanismError";
  } catch (const tokens::MissingMechanismError& error) {
    const std::string expected = GetParam() == testsupport::TokenKind::softhsm
                                     ? "CKM_SP800_108_COUNTER_KDF"
                                     : "CKM_AES_ECB_ENCRYPT_DATA";
    EXPECT_NE(std::string(error.what()).find(expected), std::string::npos) << error.what();
  }
}

TEST_P(TokenTest, WrongPinFailsAtOpen) {
  tokens::TokenConfig config = config_;
  const std::string pin_file = dir_->path() + "/wrong.pin";
  testsupport::write_private_file(pin_file, "99999999\n");
  config.pin_file = pin_file;
  context_.reset();
  try {
    tokens::TokenContext::open(config);
    FAIL() << "expected CKR_PIN_INCORRECT";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), static_cast<CK_RV>(CKR_PIN_INCORRECT)) << error.what();
  }
}

TEST_P(TokenTest, UnknownTokenFailsListingTheTokensThatExist) {
  tokens::TokenConfig config = config_;
  config.uri = "pkcs11:token=no-such-token";
  context_.reset();
  try {
    tokens::TokenContext::open(config);
    FAIL() << "expected a not-found error";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.kind(), hsm::ErrorKind::not_found) << error.what();
  }
}

TEST_P(TokenTest, RequireKmsKeysNamesTheMissingOnes) {
  EXPECT_EQ(context_->missing_kms_keys().size(), 3u);
  EXPECT_THROW(context_->require_kms_keys(), tokens::NotInitialisedError);
  tokentest::create_kms_keys(*context_);
  EXPECT_TRUE(context_->missing_kms_keys().empty());
  EXPECT_NO_THROW(context_->require_kms_keys());
}

// A profile without a row in the profile table is refused before any token call, on either
// token: derive() never falls back to another profile's KDF.
TEST_P(TokenTest, DeriveRefusesAProfileWithoutAKdf) {
  tokens::TokenProfile unknown = context_->profile();
  unknown.id = static_cast<tokens::ProfileId>(3);
  unknown.name = "third";
  const Bytes base_value = testkdf::random_bytes(32);
  const std::string refusal = context_->pool().run([&](hsm::Session& session) {
    hsm::ObjectGuard base(session, known_key(session, base_value, CKA_DERIVE,
                                             unknown.extractable_base_for_extractable_children));
    try {
      hsm::ObjectGuard child(
          session, tokens::derive(session, unknown, base.get(), testkdf::label("envelope"), {},
                                  tokens::templates::media_key()));
      return std::string("derived a key");
    } catch (const hsm::Error& error) {
      return std::string(error.kind() == hsm::ErrorKind::invalid_argument ? "refused: "
                                                                          : "another error: ") +
             error.what();
    }
  });
  EXPECT_EQ(refusal.rfind("refused: ", 0), 0u) << refusal;
  EXPECT_NE(refusal.find("no in-token KDF"), std::string::npos) << refusal;
}

// KDF in the token == software KDF: derive an extractable child of a known base, wrap it
// under a known key, unwrap in software, compare.
TEST_P(TokenTest, KdfInTheTokenMatchesTheSoftwareReference) {
  const tokens::TokenProfile& profile = context_->profile();
  const Bytes base_value = testkdf::random_bytes(32);
  const Bytes kek_value = testkdf::random_bytes(32);
  const Bytes label = testkdf::label("media-chair");
  for (const Bytes& context : {Bytes{}, testkdf::to_bytes("ctx"), testkdf::random_bytes(300)}) {
    const Bytes wrapped = context_->pool().run([&](hsm::Session& session) {
      hsm::ObjectGuard base(session, known_key(session, base_value, CKA_DERIVE,
                                               profile.extractable_base_for_extractable_children));
      hsm::ObjectGuard kek(session, known_key(session, kek_value, CKA_WRAP, false));
      hsm::ObjectGuard child(session, tokens::derive(session, profile, base.get(), label, context,
                                                     tokens::templates::media_key()));
      hsm::Mechanism wrap(profile.wrap_mechanism);
      return session.wrap_key(wrap, kek.get(), child.get());
    });
    EXPECT_EQ(wrapped.size(), 40u);
    EXPECT_EQ(testkdf::unwrap_pad(kek_value, wrapped),
              testkdf::kdf(profile.id, base_value, label, context));
  }
}

// The protocol's response chain, all non-extractable in the token:
// KR = KDF(K, "response"), W = KDF(KR, "response-wrap"), K1 = KDF(M, "media-chair"),
// response = RFC5649(W, K1). Software computes the same and unwraps.
TEST_P(TokenTest, ResponseChainMatchesTheSoftwareReference) {
  const tokens::TokenProfile& profile = context_->profile();
  const Bytes root_value = testkdf::random_bytes(32);
  const Bytes master_value = testkdf::random_bytes(32);
  const Bytes id = testkdf::to_bytes("\x00\x19sip:alice@ims.example.net");
  const Bytes nonce = testkdf::random_bytes(32);
  const Bytes wrapped = context_->pool().run([&](hsm::Session& session) {
    hsm::ObjectGuard root(session, known_key(session, root_value, CKA_DERIVE, false));
    hsm::ObjectGuard master(session, known_key(session, master_value, CKA_DERIVE,
                                               profile.extractable_base_for_extractable_children));
    hsm::ObjectGuard response(
        session, tokens::derive(session, profile, root.get(), testkdf::label("response"), id,
                                tokens::templates::response_key()));
    hsm::ObjectGuard wrap_key(
        session, tokens::derive(session, profile, response.get(), testkdf::label("response-wrap"),
                                nonce, tokens::templates::response_wrap_key()));
    hsm::ObjectGuard media(
        session, tokens::derive(session, profile, master.get(), testkdf::label("media-chair"),
                                nonce, tokens::templates::media_key()));
    hsm::Mechanism wrap(profile.wrap_mechanism);
    return session.wrap_key(wrap, wrap_key.get(), media.get());
  });
  const Bytes kr = testkdf::kdf(profile.id, root_value, testkdf::label("response"), id);
  const Bytes w = testkdf::kdf(profile.id, kr, testkdf::label("response-wrap"), nonce);
  const Bytes k1 = testkdf::kdf(profile.id, master_value, testkdf::label("media-chair"), nonce);
  EXPECT_EQ(testkdf::unwrap_pad(w, wrapped), k1);
}

struct Expected {
  const char* name;
  hsm::AttributeTemplate (*make)(const tokens::TokenProfile&);
  bool token, extractable, encrypt, decrypt, derive, wrap, unwrap;
  CK_KEY_TYPE key_type;
  bool modifiable = false;  // long-term and root keys are fixed; per-request children not
  // Long-term and root keys are private; the working keys of a key request (KE, KR, W, BW,
  // media keys) and root keys in transit are public session objects
  // (tokens/src/key_templates.cpp "working_key", "root_key_in_transit").
  bool private_object = true;
};

TEST_P(TokenTest, EveryKeyClassIsSensitiveWithOnePurpose) {
  const tokens::TokenProfile& profile = context_->profile();
  static const Expected classes[] = {
      {"storage", tokens::templates::storage_key, true, false, false, false, false, true, true,
       CKK_AES},
      {"transport", tokens::templates::transport_key, true, false, false, false, false, false, true,
       CKK_AES},
      {"root in transit", tokens::templates::root_key_in_transit, false, true, false, false, true,
       false, false, CKK_AES, false, false},
  };
  context_->pool().run([&](hsm::Session& session) {
    auto check = [&](CK_OBJECT_HANDLE key, const Expected& e) {
      SCOPED_TRACE(e.name);
      EXPECT_TRUE(session.get_bool(key, CKA_SENSITIVE));
      EXPECT_EQ(session.get_bool(key, CKA_PRIVATE), e.private_object);
      EXPECT_EQ(session.get_bool(key, CKA_TOKEN), e.token);
      EXPECT_EQ(session.get_bool(key, CKA_EXTRACTABLE), e.extractable);
      EXPECT_EQ(session.get_bool(key, CKA_ENCRYPT), e.encrypt);
      EXPECT_EQ(session.get_bool(key, CKA_DECRYPT), e.decrypt);
      EXPECT_EQ(session.get_bool(key, CKA_DERIVE), e.derive);
      EXPECT_EQ(session.get_bool(key, CKA_WRAP), e.wrap);
      EXPECT_EQ(session.get_bool(key, CKA_UNWRAP), e.unwrap);
      EXPECT_EQ(session.get_ulong(key, CKA_KEY_TYPE), e.key_type);
      EXPECT_EQ(session.get_bool(key, CKA_MODIFIABLE), e.modifiable);
      EXPECT_EQ(session.get_ulong(key, CKA_VALUE_LEN), 32u);
      // Sensitive: the value cannot be read.
      EXPECT_THROW(session.get_bytes(key, CKA_VALUE), hsm::Error);
    };
    for (const Expected& e : classes) {
      hsm::ObjectGuard key(session, tokens::generate_aes_key(session, e.make(profile)));
      check(key.get(), e);
    }
    const bool nss_quirk = profile.extractable_base_for_extractable_children;
    hsm::ObjectGuard master(
        session, tokens::generate_aes_key(session, tokens::templates::master_key(profile)));
    check(master.get(),
          {"master", nullptr, true, nss_quirk, false, false, true, false, false, CKK_AES});
    if (nss_quirk) {
      EXPECT_TRUE(session.get_bool(master.get(), CKA_WRAP_WITH_TRUSTED));
    }
    hsm::ObjectGuard personalisation(
        session,
        tokens::generate_aes_key(session, tokens::templates::personalisation_key(profile, "p1")));
    check(personalisation.get(),
          {"personalisation", nullptr, true, false, false, false, false, true, false, CKK_AES});
    EXPECT_EQ(session.get_string(personalisation.get(), CKA_LABEL), "kms/personalisation/p1");
    hsm::ObjectGuard root(
        session, tokens::generate_aes_key(
                     session, tokens::templates::root_key(profile, tokens::IdentityKind::subscriber,
                                                          "sip:a@b.example", 3, true)));
    check(root.get(),
          {"root (token mode)", nullptr, true, false, false, false, true, false, false, CKK_AES});
    EXPECT_EQ(session.get_string(root.get(), CKA_LABEL), "kms/subscriber/sip:a@b.example/v3");

    // Children, derived from a root key as the protocol does.
    const Bytes label = testkdf::label("envelope");
    const Bytes context = testkdf::to_bytes("ctx");
    struct Child {
      const char* name;
      hsm::AttributeTemplate (*make)();
      bool extractable, decrypt, derive, wrap;
      CK_KEY_TYPE key_type;
    };
    const Child children[] = {
        {"envelope", tokens::templates::envelope_key, false, true, false, false, CKK_AES},
        {"response", tokens::templates::response_key, false, false, true, false, CKK_AES},
        {"response wrap", tokens::templates::response_wrap_key, false, false, false, true, CKK_AES},
        {"bridge wrap", tokens::templates::bridge_wrap_key, false, false, false, true, CKK_AES},
    };
    for (const Child& c : children) {
      hsm::ObjectGuard child(
          session, tokens::derive(session, profile, root.get(), label, context, c.make()));
      check(child.get(), {c.name, nullptr, false, c.extractable, false, c.decrypt, c.derive, c.wrap,
                          false, c.key_type, true, false});
    }
    hsm::ObjectGuard media(session, tokens::derive(session, profile, master.get(), label, context,
                                                   tokens::templates::media_key()));
    check(media.get(), {"media", nullptr, false, true, false, false, false, false, false,
                        CKK_GENERIC_SECRET, true, false});
    return 0;
  });
}

// The media key can be wrapped but never read; a non-extractable key cannot be wrapped on
// SoftHSM (NSS does not enforce CKA_EXTRACTABLE=FALSE on wrap: see docs/ARCHITECTURE.md).
TEST_P(TokenTest, NonExtractableKeysDoNotLeaveSoftHsm) {
  if (GetParam() != testsupport::TokenKind::softhsm) GTEST_SKIP() << "NSS does not enforce it";
  context_->pool().run([&](hsm::Session& session) {
    hsm::ObjectGuard storage(
        session,
        tokens::generate_aes_key(session, tokens::templates::storage_key(context_->profile())));
    hsm::ObjectGuard master(
        session,
        tokens::generate_aes_key(session, tokens::templates::master_key(context_->profile())));
    hsm::Mechanism wrap(context_->profile().wrap_mechanism);
    EXPECT_THROW(session.wrap_key(wrap, storage.get(), master.get()), hsm::Error);
    return 0;
  });
}

INSTANTIATE_TEST_SUITE_P(Tokens, TokenTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         tokentest::kind_param_name);

}  // namespace
