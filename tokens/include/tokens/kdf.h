// The protocol KDF, computed inside the token (docs/PROTOCOL.md "Profiles") with the
// mechanism the profile's row of the profile table builds (tokens/src/profile_table.cpp).
// The output is always 32 bytes (CKA_VALUE_LEN 32 is added); its other attributes come from
// `attributes`, a key_templates.h template (tokens do not inherit CKA_SENSITIVE).
#pragma once

#include <string_view>

#include "hsm/attributes.h"
#include "hsm/secure_bytes.h"
#include "hsm/session.h"
#include "tokens/profile.h"

namespace tokens {

// Derives a key from `base` and returns its handle (the caller owns it: wrap it in an
// hsm::ObjectGuard). Throws hsm::Error; ErrorKind::invalid_argument, before any token call,
// for a profile the table has no KDF for.
CK_OBJECT_HANDLE derive(hsm::Session& session, const TokenProfile& profile, CK_OBJECT_HANDLE base,
                        hsm::ByteView label, hsm::ByteView context,
                        hsm::AttributeTemplate attributes);

// L(name): the ASCII bytes of "IMS-CONF-KMS/1 " + name (docs/PROTOCOL.md "Notation"), the
// label of every in-token derivation (the kms core's protocol::label is this one).
hsm::Bytes protocol_label(std::string_view name);

}  // namespace tokens
