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

#include "hsm/pkcs11.h"
#include "tokens/token_quirks.h"

namespace tokens {

// The protocol's profile ids (carried in every envelope and response).
enum class ProfileId : std::uint8_t { aes_ecb_sha256 = 1, sp800_108_cmac = 2 };

enum class KdfKind {
  aes_ecb_sha256,  // CKM_AES_ECB_ENCRYPT_DATA over SHA-256(label || 0x00 || context)
  sp800_108_cmac,  // CKM_SP800_108_COUNTER_KDF, PRF CKM_AES_CMAC
};

struct TokenProfile {
  ProfileId id = ProfileId::aes_ecb_sha256;
  std::string name;  // "aes-ecb-sha256" / "sp800-108-cmac"
  KdfKind kdf = KdfKind::aes_ecb_sha256;
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

// The requested profile name: "auto", "aes-ecb-sha256" or "sp800-108-cmac".
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

// Chooses the profile from C_GetMechanismList. "auto": sp800-108-cmac when
// CKM_SP800_108_COUNTER_KDF (and CKM_AES_CMAC) is offered, else aes-ecb-sha256 when
// CKM_AES_ECB_ENCRYPT_DATA is offered. A named profile requires its KDF mechanism to be
// offered. Always requires CKM_AES_KEY_GEN, CKM_AES_GCM and an RFC 5649 wrap mechanism.
// Throws MissingMechanismError naming the missing mechanisms, std::invalid_argument for
// an unknown profile name.
TokenProfile select_profile(std::span<const CK_MECHANISM_TYPE> mechanisms,
                            std::string_view requested = kAutoProfile);

// The profile definition by name or id, with the given wrap mechanism (no token check).
std::optional<TokenProfile> profile_by_name(std::string_view name,
                                            CK_MECHANISM_TYPE wrap_mechanism);
std::optional<TokenProfile> profile_by_id(std::uint8_t id, CK_MECHANISM_TYPE wrap_mechanism);

}  // namespace tokens
