#include "tokens/profile.h"

#include <algorithm>
#include <stdexcept>

#include "hsm/module.h"

namespace tokens {
namespace {

constexpr std::string_view kAesEcbName = "aes-ecb-sha256";
constexpr std::string_view kSp800Name = "sp800-108-cmac";

bool offers(std::span<const CK_MECHANISM_TYPE> mechanisms, CK_MECHANISM_TYPE type) {
  return std::find(mechanisms.begin(), mechanisms.end(), type) != mechanisms.end();
}

TokenProfile make(ProfileId id, CK_MECHANISM_TYPE wrap_mechanism) {
  TokenProfile profile;
  profile.id = id;
  profile.wrap_mechanism = wrap_mechanism;
  if (id == ProfileId::aes_ecb_sha256) {
    profile.name = kAesEcbName;
    profile.kdf = KdfKind::aes_ecb_sha256;
    profile.kdf_mechanism = CKM_AES_ECB_ENCRYPT_DATA;
  } else {
    profile.name = kSp800Name;
    profile.kdf = KdfKind::sp800_108_cmac;
    profile.kdf_mechanism = CKM_SP800_108_COUNTER_KDF;
    // NSS softoken 3.87, the one SP 800-108 token measured, refuses an extractable child of
    // a non-extractable base. Applying it to every SP 800-108 token keeps one rule per
    // profile; a token that enforces CKA_WRAP_WITH_TRUSTED still keeps M inside.
    profile.extractable_base_for_extractable_children = true;
  }
  return profile;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

}  // namespace

std::optional<TokenProfile> profile_by_name(std::string_view name,
                                            CK_MECHANISM_TYPE wrap_mechanism) {
  if (name == kAesEcbName) return make(ProfileId::aes_ecb_sha256, wrap_mechanism);
  if (name == kSp800Name) return make(ProfileId::sp800_108_cmac, wrap_mechanism);
  return std::nullopt;
}

std::optional<TokenProfile> profile_by_id(std::uint8_t id, CK_MECHANISM_TYPE wrap_mechanism) {
  if (id == 1) return make(ProfileId::aes_ecb_sha256, wrap_mechanism);
  if (id == 2) return make(ProfileId::sp800_108_cmac, wrap_mechanism);
  return std::nullopt;
}

TokenProfile select_profile(std::span<const CK_MECHANISM_TYPE> mechanisms,
                            std::string_view requested) {
  if (requested != kAutoProfile && requested != kAesEcbName && requested != kSp800Name) {
    throw std::invalid_argument("unknown token profile \"" + std::string(requested) +
                                "\" (expected auto, aes-ecb-sha256 or sp800-108-cmac)");
  }
  std::vector<std::string> missing;
  for (CK_MECHANISM_TYPE needed : {CKM_AES_KEY_GEN, CKM_AES_GCM}) {
    if (!offers(mechanisms, needed)) missing.push_back(hsm::mechanism_name(needed));
  }
  // 0x210B first: NSS's 0x210A is RFC 3394 + PKCS#7 padding, not RFC 5649.
  CK_MECHANISM_TYPE wrap = CKM_AES_KEY_WRAP_KWP;
  if (!offers(mechanisms, CKM_AES_KEY_WRAP_KWP)) {
    if (offers(mechanisms, CKM_AES_KEY_WRAP_PAD)) {
      wrap = CKM_AES_KEY_WRAP_PAD;
    } else {
      missing.push_back(hsm::mechanism_name(CKM_AES_KEY_WRAP_KWP) + " or " +
                        hsm::mechanism_name(CKM_AES_KEY_WRAP_PAD) + " (RFC 5649 key wrap)");
    }
  }
  const bool sp800 =
      offers(mechanisms, CKM_SP800_108_COUNTER_KDF) && offers(mechanisms, CKM_AES_CMAC);
  const bool aes_ecb = offers(mechanisms, CKM_AES_ECB_ENCRYPT_DATA);
  std::optional<ProfileId> chosen;
  if (requested == kSp800Name || (requested == kAutoProfile && sp800)) {
    if (sp800) {
      chosen = ProfileId::sp800_108_cmac;
    } else {
      for (CK_MECHANISM_TYPE needed : {CKM_SP800_108_COUNTER_KDF, CKM_AES_CMAC}) {
        if (!offers(mechanisms, needed)) missing.push_back(hsm::mechanism_name(needed));
      }
    }
  } else if (requested == kAesEcbName || aes_ecb) {
    if (aes_ecb) {
      chosen = ProfileId::aes_ecb_sha256;
    } else {
      missing.push_back(hsm::mechanism_name(CKM_AES_ECB_ENCRYPT_DATA));
    }
  } else {
    missing.push_back(hsm::mechanism_name(CKM_SP800_108_COUNTER_KDF) + " (with " +
                      hsm::mechanism_name(CKM_AES_CMAC) + ") or " +
                      hsm::mechanism_name(CKM_AES_ECB_ENCRYPT_DATA) + " (in-token KDF)");
  }
  if (!missing.empty() || !chosen) {
    throw MissingMechanismError("token lacks mechanisms the KMS needs for profile " +
                                    std::string(requested) + ": " + join(missing),
                                missing);
  }
  return make(*chosen, wrap);
}

}  // namespace tokens
