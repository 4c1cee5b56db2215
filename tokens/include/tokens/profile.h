// Token profiles: which in-token KDF and which RFC 5649 wrap mechanism a deployment uses,
// chosen once from the token's mechanism list (docs/PROTOCOL.md "Profiles").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "hsm/mechanism.h"
#include "hsm/pkcs11.h"
#include "hsm/secure_bytes.h"
#include "tokens/token_quirks.h"

namespace tokens {

// The protocol's profile ids (carried in every envelope and response).
enum class ProfileId : std::uint8_t { aes_ecb_sha256 = 1, sp800_108_cmac = 2 };

// A profile's in-token KDF: the C_DeriveKey mechanism for KDF(base, label, context)
// (docs/PROTOCOL.md "Profiles"). Throws hsm::Error.
using DeriveMechanismBuilder = hsm::Mechanism (*)(hsm::ByteView label, hsm::ByteView context);

// One row of the profile table (tokens/src/profile_table.cpp): everything the token layer
// knows about a profile. Selection, the name lists of --help, config checks and errors,
// and derive() all read the table; adding a profile is adding a row (and its id above).
struct ProfileDefinition {
  ProfileId id;
  std::string_view name;
  CK_MECHANISM_TYPE kdf_mechanism;
  // What the KDF needs the token to offer (kdf_mechanism first), beyond what every
  // profile needs: CKM_AES_KEY_GEN, CKM_AES_GCM and an RFC 5649 key wrap.
  std::span<const CK_MECHANISM_TYPE> kdf_requires;
  DeriveMechanismBuilder derive_mechanism;
  // See TokenProfile::extractable_base_for_extractable_children.
  bool extractable_base_for_extractable_children;
  // "auto" picks, of the profiles the token offers, the one with the highest preference.
  int auto_preference;
};

// The table, in id order.
std::span<const ProfileDefinition> profile_definitions();
const ProfileDefinition* find_profile_definition(ProfileId id);
const ProfileDefinition* find_profile_definition(std::string_view name);
// What may be requested: "auto, aes-ecb-sha256" + last_separator + "sp800-108-cmac".
std::string requestable_profile_names(std::string_view last_separator = ", ");

struct TokenProfile {
  ProfileId id = ProfileId::aes_ecb_sha256;
  std::string name;  // ProfileDefinition::name
  CK_MECHANISM_TYPE kdf_mechanism = CKM_AES_ECB_ENCRYPT_DATA;
  // RFC 5649 AES key wrap with padding: CKM_AES_KEY_WRAP_KWP (0x210B) whenever the token
  // offers it, else CKM_AES_KEY_WRAP_PAD (0x210A, RFC 5649 on SoftHSM; NOT on NSS, which
  // offers 0x210B and so never gets 0x210A).
  CK_MECHANISM_TYPE wrap_mechanism = CKM_AES_KEY_WRAP_PAD;
  CK_MECHANISM_TYPE aead_mechanism = CKM_AES_GCM;
  // Quirk (NSS softoken SP 800-108): a base key derives an extractable child only if the
  // base itself is CKA_EXTRACTABLE=TRUE. The media keys derived from the master key are
  // extractable (for wrapping only), so on this profile the master key is created
  // sensitive + extractable + CKA_WRAP_WITH_TRUSTED=TRUE. See docs/ARCHITECTURE.md.
  bool extractable_base_for_extractable_children = false;
  // How this token departs from the specification (set by TokenContext::open from the
  // token's identity or the configuration; standard for a profile chosen without a token).
  TokenQuirks quirks;

  std::uint8_t wire_id() const noexcept { return static_cast<std::uint8_t>(id); }
};

// The requested profile: "auto" or a name of the table.
inline constexpr std::string_view kAutoProfile = "auto";

// The token lacks what the KMS needs; what() names every missing mechanism.
class MissingMechanismError : public std::runtime_error {
 public:
  MissingMechanismError(std::string message, std::vector<std::string> missing)
      : std::runtime_error(std::move(message)), missing_(std::move(missing)) {}
  const std::vector<std::string>& missing() const noexcept { return missing_; }

 private:
  std::vector<std::string> missing_;
};

// Chooses the profile from C_GetMechanismList. "auto": of the profiles whose kdf_requires
// are all offered, the one with the highest auto_preference (sp800-108-cmac, else
// aes-ecb-sha256). A named profile requires its kdf_requires to be offered. Always requires
// CKM_AES_KEY_GEN, CKM_AES_GCM and an RFC 5649 wrap mechanism. Throws MissingMechanismError naming
// the missing mechanisms, std::invalid_argument for an unknown profile name.
TokenProfile select_profile(std::span<const CK_MECHANISM_TYPE> mechanisms,
                            std::string_view requested = kAutoProfile);

// The profile definition by name or id, with the given wrap mechanism (no token check).
std::optional<TokenProfile> profile_by_name(std::string_view name,
                                            CK_MECHANISM_TYPE wrap_mechanism);
std::optional<TokenProfile> profile_by_id(std::uint8_t id, CK_MECHANISM_TYPE wrap_mechanism);

}  // namespace tokens
