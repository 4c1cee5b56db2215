#include "tokens/profile.h"

#include <algorithm>
#include <stdexcept>

#include "hsm/module.h"

namespace tokens {
namespace {

bool offers(std::span<const CK_MECHANISM_TYPE> mechanisms, CK_MECHANISM_TYPE type) {
  return std::find(mechanisms.begin(), mechanisms.end(), type) != mechanisms.end();
}

bool offers_all(std::span<const CK_MECHANISM_TYPE> mechanisms,
                std::span<const CK_MECHANISM_TYPE> needed) {
  return std::all_of(needed.begin(), needed.end(),
                     [&](CK_MECHANISM_TYPE type) { return offers(mechanisms, type); });
}

TokenProfile make(const ProfileDefinition& definition, CK_MECHANISM_TYPE wrap_mechanism) {
  TokenProfile profile;
  profile.id = definition.id;
  profile.name = definition.name;
  profile.kdf_mechanism = definition.kdf_mechanism;
  profile.wrap_mechanism = wrap_mechanism;
  profile.extractable_base_for_extractable_children =
      definition.extractable_base_for_extractable_children;
  return profile;
}

// "CKM_SP800_108_COUNTER_KDF (with CKM_AES_CMAC)": a profile's KDF needs, for messages.
std::string kdf_needs(const ProfileDefinition& definition) {
  std::string out = hsm::mechanism_name(definition.kdf_requires.front());
  const auto rest = definition.kdf_requires.subspan(1);
  if (rest.empty()) return out;
  out += " (with ";
  for (std::size_t i = 0; i < rest.size(); ++i) {
    out += (i == 0 ? "" : ", ") + hsm::mechanism_name(rest[i]);
  }
  return out + ")";
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
  const ProfileDefinition* definition = find_profile_definition(name);
  if (definition == nullptr) return std::nullopt;
  return make(*definition, wrap_mechanism);
}

std::optional<TokenProfile> profile_by_id(std::uint8_t id, CK_MECHANISM_TYPE wrap_mechanism) {
  const ProfileDefinition* definition = find_profile_definition(static_cast<ProfileId>(id));
  if (definition == nullptr) return std::nullopt;
  return make(*definition, wrap_mechanism);
}

TokenProfile select_profile(std::span<const CK_MECHANISM_TYPE> mechanisms,
                            std::string_view requested) {
  const ProfileDefinition* named = nullptr;
  if (requested != kAutoProfile) {
    named = find_profile_definition(requested);
    if (named == nullptr) {
      throw std::invalid_argument("unknown token profile \"" + std::string(requested) +
                                  "\" (expected " + requestable_profile_names(" or ") + ")");
    }
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
  const ProfileDefinition* chosen = nullptr;
  if (named != nullptr) {
    if (offers_all(mechanisms, named->kdf_requires)) {
      chosen = named;
    } else {
      for (CK_MECHANISM_TYPE needed : named->kdf_requires) {
        if (!offers(mechanisms, needed)) missing.push_back(hsm::mechanism_name(needed));
      }
    }
  } else {
    for (const ProfileDefinition& candidate : profile_definitions()) {
      if (offers_all(mechanisms, candidate.kdf_requires) &&
          (chosen == nullptr || candidate.auto_preference > chosen->auto_preference)) {
        chosen = &candidate;
      }
    }
    if (chosen == nullptr) {
      // Every profile's needs, most preferred first.
      std::vector<const ProfileDefinition*> by_preference;
      for (const ProfileDefinition& candidate : profile_definitions()) {
        by_preference.push_back(&candidate);
      }
      std::sort(by_preference.begin(), by_preference.end(),
                [](const ProfileDefinition* a, const ProfileDefinition* b) {
                  return a->auto_preference > b->auto_preference;
                });
      std::string any;
      for (const ProfileDefinition* candidate : by_preference) {
        any += (any.empty() ? "" : " or ") + kdf_needs(*candidate);
      }
      missing.push_back(any + " (in-token KDF)");
    }
  }
  if (!missing.empty() || chosen == nullptr) {
    throw MissingMechanismError("token lacks mechanisms the KMS needs for profile " +
                                    std::string(requested) + ": " + join(missing),
                                missing);
  }
  return make(*chosen, wrap);
}

}  // namespace tokens
