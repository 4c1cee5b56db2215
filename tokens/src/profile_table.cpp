// The token profiles (docs/PROTOCOL.md "Profiles", docs/ARCHITECTURE.md "Token profiles"):
// one row each, with the in-token KDF that builds its derive mechanism. A new profile is a
// new ProfileId, a builder and a row here; selection, names and derive() read the table.
#include <openssl/evp.h>

#include <algorithm>
#include <array>

#include "hsm/error.h"
#include "tokens/profile.h"

namespace tokens {
namespace {

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

// Profile 1: CKM_AES_ECB_ENCRYPT_DATA over SHA-256(label || 0x00 || context).
hsm::Mechanism aes_ecb_sha256_mechanism(hsm::ByteView label, hsm::ByteView context) {
  const hsm::SecureBytes digest = hashed_context(label, context);
  return hsm::Mechanism::aes_ecb_encrypt_data(digest.view());
}

// Profile 2: CKM_SP800_108_COUNTER_KDF, PRF CMAC-AES, [i]32 || label || 0x00 || context || [L]32.
hsm::Mechanism sp800_108_cmac_mechanism(hsm::ByteView label, hsm::ByteView context) {
  return hsm::Mechanism::sp800_108_counter(CKM_AES_CMAC, label, context);
}

constexpr std::array<CK_MECHANISM_TYPE, 1> kAesEcbRequires = {CKM_AES_ECB_ENCRYPT_DATA};
constexpr std::array<CK_MECHANISM_TYPE, 2> kSp800Requires = {CKM_SP800_108_COUNTER_KDF,
                                                             CKM_AES_CMAC};

constexpr std::array<ProfileDefinition, 2> kProfiles = {{
    {ProfileId::aes_ecb_sha256, "aes-ecb-sha256", CKM_AES_ECB_ENCRYPT_DATA, kAesEcbRequires,
     &aes_ecb_sha256_mechanism, false, 1},
    // NSS softoken 3.87, the one SP 800-108 token measured, refuses an extractable child of
    // a non-extractable base. Applying it to every SP 800-108 token keeps one rule per
    // profile; a token that enforces CKA_WRAP_WITH_TRUSTED still keeps M inside.
    {ProfileId::sp800_108_cmac, "sp800-108-cmac", CKM_SP800_108_COUNTER_KDF, kSp800Requires,
     &sp800_108_cmac_mechanism, true, 2},
}};

// A row without a KDF, or out of id order, or whose kdf_mechanism is not the first thing it
// requires, does not compile.
constexpr bool well_formed(const std::array<ProfileDefinition, kProfiles.size()>& rows) {
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const ProfileDefinition& row = rows[i];
    if (row.derive_mechanism == nullptr || row.name.empty() || row.name == kAutoProfile) {
      return false;
    }
    if (row.kdf_requires.empty() || row.kdf_requires.front() != row.kdf_mechanism) return false;
    if (i > 0 && static_cast<int>(rows[i - 1].id) >= static_cast<int>(row.id)) return false;
    for (std::size_t j = 0; j < i; ++j) {
      if (rows[j].name == row.name || rows[j].auto_preference == row.auto_preference) {
        return false;
      }
    }
  }
  return true;
}
static_assert(well_formed(kProfiles), "tokens/src/profile_table.cpp: a malformed profile row");

}  // namespace

std::span<const ProfileDefinition> profile_definitions() { return kProfiles; }

const ProfileDefinition* find_profile_definition(ProfileId id) {
  const auto* row = std::find_if(kProfiles.begin(), kProfiles.end(),
                                 [id](const ProfileDefinition& p) { return p.id == id; });
  return row == kProfiles.end() ? nullptr : row;
}

const ProfileDefinition* find_profile_definition(std::string_view name) {
  const auto* row = std::find_if(kProfiles.begin(), kProfiles.end(),
                                 [name](const ProfileDefinition& p) { return p.name == name; });
  return row == kProfiles.end() ? nullptr : row;
}

std::string requestable_profile_names(std::string_view last_separator) {
  std::string out(kAutoProfile);
  for (std::size_t i = 0; i < kProfiles.size(); ++i) {
    out += i + 1 == kProfiles.size() ? last_separator : std::string_view(", ");
    out += kProfiles[i].name;
  }
  return out;
}

}  // namespace tokens
