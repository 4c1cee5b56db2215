#include "tokens/kdf.h"

#include <string>

#include "hsm/error.h"
#include "hsm/mechanism.h"

namespace tokens {
namespace {

constexpr CK_ULONG kDerivedKeyBytes = 32;

}  // namespace

CK_OBJECT_HANDLE derive(hsm::Session& session, const TokenProfile& profile, CK_OBJECT_HANDLE base,
                        hsm::ByteView label, hsm::ByteView context,
                        hsm::AttributeTemplate attributes) {
  // The table decides the KDF; a profile it does not know never falls back to another one.
  const ProfileDefinition* definition = find_profile_definition(profile.id);
  if (definition == nullptr || definition->derive_mechanism == nullptr) {
    throw hsm::Error(hsm::ErrorKind::invalid_argument, "derive",
                     "profile " + std::to_string(profile.wire_id()) + " (\"" + profile.name +
                         "\") has no in-token KDF in tokens/src/profile_table.cpp");
  }
  attributes.set_ulong(CKA_VALUE_LEN, kDerivedKeyBytes);
  hsm::Mechanism mechanism = definition->derive_mechanism(label, context);
  return session.derive_key(mechanism, base, std::move(attributes));
}

hsm::Bytes protocol_label(std::string_view name) {
  const std::string text = "IMS-CONF-KMS/1 " + std::string(name);
  return hsm::Bytes(text.begin(), text.end());
}

}  // namespace tokens
