#include "tokens/profile.h"

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "tokens/token_config.h"

namespace {

using Mechs = std::vector<CK_MECHANISM_TYPE>;
const Mechs kBase = {CKM_AES_KEY_GEN, CKM_AES_GCM};

Mechs with(Mechs mechanisms, std::initializer_list<CK_MECHANISM_TYPE> more) {
  mechanisms.insert(mechanisms.end(), more);
  return mechanisms;
}

// CKR_GENERAL_ERROR is a failed integrity check only on a token known to report it so
// (SoftHSM 2.6.1); elsewhere it may be a device fault and must reach recovery.
TEST(TokenQuirks, GeneralErrorIsBadInputOnlyOnSoftHsm) {
  const tokens::TokenQuirks standard = tokens::quirks_by_name("standard");
  const tokens::TokenQuirks softhsm = tokens::quirks_by_name("softhsm2");
  EXPECT_FALSE(tokens::is_integrity_failure(standard, CKR_GENERAL_ERROR));
  EXPECT_TRUE(tokens::is_integrity_failure(softhsm, CKR_GENERAL_ERROR));
  for (const auto& quirks : {standard, softhsm}) {
    EXPECT_TRUE(tokens::is_integrity_failure(quirks, CKR_ENCRYPTED_DATA_INVALID));
    EXPECT_TRUE(tokens::is_integrity_failure(quirks, CKR_WRAPPED_KEY_INVALID));
    EXPECT_FALSE(tokens::is_integrity_failure(quirks, CKR_FUNCTION_FAILED));
    EXPECT_FALSE(tokens::is_integrity_failure(quirks, CKR_DEVICE_ERROR));
    EXPECT_FALSE(tokens::is_integrity_failure(quirks, CKR_SESSION_HANDLE_INVALID));
  }
  EXPECT_THROW(tokens::quirks_by_name("auto"), std::invalid_argument);
}

TEST(TokenQuirks, DetectedFromTheLibraryOrTokenManufacturer) {
  auto fill = [](CK_UTF8CHAR* field, std::size_t size, const char* text) {
    std::memset(field, ' ', size);
    std::memcpy(field, text, std::strlen(text));
  };
  CK_INFO library{};
  CK_TOKEN_INFO token{};
  fill(library.manufacturerID, sizeof library.manufacturerID, "SoftHSM");
  fill(token.manufacturerID, sizeof token.manufacturerID, "SoftHSM project");
  fill(token.model, sizeof token.model, "SoftHSM v2");
  EXPECT_EQ(tokens::detect_quirks(library, token).name, "softhsm2");
  fill(library.manufacturerID, sizeof library.manufacturerID, "Mozilla Foundation");
  fill(token.manufacturerID, sizeof token.manufacturerID, "Mozilla Foundation");
  fill(token.model, sizeof token.model, "NSS 3");
  EXPECT_EQ(tokens::detect_quirks(library, token).name, "nss");
  fill(library.manufacturerID, sizeof library.manufacturerID, "Acme HSM Inc.");
  fill(token.manufacturerID, sizeof token.manufacturerID, "Acme HSM Inc.");
  fill(token.model, sizeof token.model, "Acme 9000");
  EXPECT_EQ(tokens::detect_quirks(library, token).name, "standard");
}

// The key-custody quirks, as measured (tests/tokens/key_custody_test.cpp shows each on the
// real token): a standard token gets every attribute.
TEST(TokenQuirks, KeyCustodyAttributesPerToken) {
  const tokens::TokenQuirks standard = tokens::quirks_by_name("standard");
  EXPECT_TRUE(standard.supports_copyable);
  EXPECT_TRUE(standard.supports_wrap_templates);
  const tokens::TokenQuirks softhsm = tokens::quirks_by_name("softhsm2");
  EXPECT_TRUE(softhsm.supports_copyable);
  EXPECT_TRUE(softhsm.supports_wrap_templates);
  const tokens::TokenQuirks nss = tokens::quirks_by_name("nss");
  EXPECT_EQ(nss.name, "nss");
  EXPECT_FALSE(nss.supports_copyable);
  EXPECT_FALSE(nss.supports_wrap_templates);
  EXPECT_FALSE(nss.general_error_is_integrity_failure);
}

TEST(Profile, AutoPrefersSp800108WhenOffered) {
  const auto profile = tokens::select_profile(
      with(kBase, {CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP, CKM_SP800_108_COUNTER_KDF,
                   CKM_AES_CMAC, CKM_AES_ECB_ENCRYPT_DATA}));
  EXPECT_EQ(profile.id, tokens::ProfileId::sp800_108_cmac);
  EXPECT_EQ(profile.name, "sp800-108-cmac");
  EXPECT_EQ(profile.wire_id(), 2);
  EXPECT_EQ(profile.kdf_mechanism, CKM_SP800_108_COUNTER_KDF);
  EXPECT_EQ(profile.wrap_mechanism, CKM_AES_KEY_WRAP_KWP);  // 0x210B over 0x210A
  EXPECT_TRUE(profile.extractable_base_for_extractable_children);
}

TEST(Profile, AutoFallsBackToAesEcb) {
  const auto profile =
      tokens::select_profile(with(kBase, {CKM_AES_KEY_WRAP_PAD, CKM_AES_ECB_ENCRYPT_DATA}));
  EXPECT_EQ(profile.id, tokens::ProfileId::aes_ecb_sha256);
  EXPECT_EQ(profile.wire_id(), 1);
  EXPECT_EQ(profile.wrap_mechanism, CKM_AES_KEY_WRAP_PAD);
  EXPECT_FALSE(profile.extractable_base_for_extractable_children);
}

TEST(Profile, NamedProfileMustBeOffered) {
  const Mechs softhsm = with(kBase, {CKM_AES_KEY_WRAP_PAD, CKM_AES_ECB_ENCRYPT_DATA});
  EXPECT_EQ(tokens::select_profile(softhsm, "aes-ecb-sha256").id,
            tokens::ProfileId::aes_ecb_sha256);
  EXPECT_THROW(tokens::select_profile(softhsm, "sp800-108-cmac"), tokens::MissingMechanismError);
  EXPECT_THROW(tokens::select_profile(softhsm, "hkdf"), std::invalid_argument);
}

TEST(Profile, MissingMechanismsAreAllNamed) {
  try {
    tokens::select_profile(Mechs{CKM_AES_KEY_GEN});
    FAIL();
  } catch (const tokens::MissingMechanismError& error) {
    const std::string message = error.what();
    for (const char* name : {"CKM_AES_GCM", "CKM_AES_KEY_WRAP_KWP", "CKM_AES_KEY_WRAP_PAD",
                             "CKM_SP800_108_COUNTER_KDF", "CKM_AES_ECB_ENCRYPT_DATA"}) {
      EXPECT_NE(message.find(name), std::string::npos) << name << " not in: " << message;
    }
    EXPECT_EQ(error.missing().size(), 3u);
  }
}

TEST(Profile, ById) {
  EXPECT_EQ(tokens::profile_by_id(2, CKM_AES_KEY_WRAP_KWP)->name, "sp800-108-cmac");
  EXPECT_FALSE(tokens::profile_by_id(3, CKM_AES_KEY_WRAP_KWP).has_value());
  EXPECT_EQ(tokens::profile_by_name("aes-ecb-sha256", CKM_AES_KEY_WRAP_PAD)->wire_id(), 1);
}

// The table is the one list: lookups, the names offered everywhere, the config check.
TEST(Profile, EveryNameListAndCheckReadsTheTable) {
  const auto table = tokens::profile_definitions();
  ASSERT_GE(table.size(), 2u);
  const std::string names = tokens::requestable_profile_names();
  EXPECT_TRUE(names.starts_with("auto, aes-ecb-sha256, sp800-108-cmac")) << names;
  EXPECT_TRUE(tokens::requestable_profile_names(" or ").ends_with(
      ", " + std::string(table[table.size() - 2].name) + " or " + std::string(table.back().name)));
  for (const tokens::ProfileDefinition& row : table) {
    EXPECT_EQ(tokens::find_profile_definition(row.id), &row);
    EXPECT_EQ(tokens::find_profile_definition(row.name), &row);
    EXPECT_NE(row.derive_mechanism, nullptr) << row.name;
    EXPECT_NE(names.find(row.name), std::string::npos) << row.name;
    tokens::TokenConfig config;
    config.profile = std::string(row.name);
    EXPECT_NO_THROW(config.validate()) << row.name;
    // Named and offered exactly what it needs (with the common mechanisms): selected.
    Mechs offered(kBase.begin(), kBase.end());
    offered.push_back(CKM_AES_KEY_WRAP_KWP);
    offered.insert(offered.end(), row.kdf_requires.begin(), row.kdf_requires.end());
    EXPECT_EQ(tokens::select_profile(offered, row.name).id, row.id);
    EXPECT_EQ(tokens::select_profile(offered).id, row.id);
  }
  EXPECT_EQ(tokens::find_profile_definition(static_cast<tokens::ProfileId>(3)), nullptr);
  EXPECT_EQ(tokens::find_profile_definition("hkdf"), nullptr);
  EXPECT_EQ(tokens::find_profile_definition("auto"), nullptr);
  tokens::TokenConfig config;
  config.profile = "hkdf";
  try {
    config.validate();
    ADD_FAILURE() << "hkdf accepted";
  } catch (const tokens::ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find(tokens::requestable_profile_names(" or ")),
              std::string::npos)
        << error.what();
  }
  try {
    tokens::select_profile(Mechs(kBase.begin(), kBase.end()), "hkdf");
    ADD_FAILURE() << "hkdf selected";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(tokens::requestable_profile_names(" or ")),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
