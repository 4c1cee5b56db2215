// The protocol KDF, computed inside the token (docs/PROTOCOL.md "Profiles"):
//   profile 1: CKM_AES_ECB_ENCRYPT_DATA over SHA-256(label || 0x00 || context);
//   profile 2: CKM_SP800_108_COUNTER_KDF, PRF CMAC-AES,
//              [i]32 || label || 0x00 || context || [L]32.
// The output is always 32 bytes (CKA_VALUE_LEN 32 is added); its other attributes come from
// `attributes`, a key_templates.h template (tokens do not inherit CKA_SENSITIVE).
#pragma once

#include "hsm/attributes.h"
#include "hsm/secure_bytes.h"
#include "hsm/session.h"
#include "tokens/profile.h"

namespace tokens {

// Derives a key from `base` and returns its handle (the caller owns it: wrap it in an
// hsm::ObjectGuard). Throws hsm::Error.
CK_OBJECT_HANDLE derive(hsm::Session& session, const TokenProfile& profile, CK_OBJECT_HANDLE base,
                        hsm::ByteView label, hsm::ByteView context,
                        hsm::AttributeTemplate attributes);

}  // namespace tokens
