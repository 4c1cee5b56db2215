// What one token does differently from the PKCS#11 specification, detected once from
// C_GetInfo / C_GetTokenInfo (or named in the configuration) and fixed per deployment.
// Each quirk is read in exactly one place; see docs/ARCHITECTURE.md "Token quirks".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "hsm/pkcs11.h"

namespace tokens {

struct TokenQuirks {
  // "softhsm2", "nss" or "standard": what detection (or the configuration) chose, for logs.
  std::string name = "standard";
  // SoftHSM 2.6.1 reports a failed AES-GCM tag and a failed RFC 5649 integrity check as
  // CKR_GENERAL_ERROR. On any other token CKR_GENERAL_ERROR / CKR_FUNCTION_FAILED can be a
  // device fault, which must reach recovery and answer 503, never a client 403.
  bool general_error_is_integrity_failure = false;
  // Key custody (docs/ARCHITECTURE.md "Key custody"), read by tokens/key_templates.cpp:
  // CKA_COPYABLE (PKCS#11 2.40) may be set at key creation. NSS softoken 3.87 refuses a
  // template that carries it (CKR_GENERAL_ERROR), so its long-term keys stay copyable.
  bool supports_copyable = true;
  // CKA_WRAP_TEMPLATE / CKA_UNWRAP_TEMPLATE are understood. NSS softoken 3.87 stores them
  // as opaque bytes (the caller's CK_ATTRIBUTE array, pointers included) and enforces
  // neither, so they are not set there.
  bool supports_wrap_templates = true;
  // SoftHSM 2.6.1 never frees a destroyed session object (C_DestroyObject unlinks it only:
  // upstream SoftHSMv2 issue 562, fixed after 2.6.1), so memory grows with every derive
  // until C_Finalize. The session pool then recycles the module (drain, C_Finalize,
  // C_Initialize, login) every recycle_after_objects created objects: see
  // recycle_threshold() and docs/OPERATIONS.md "Module recycling".
  bool leaks_destroyed_session_objects = false;
  // SoftHSM 2.6.1 runs the operations of one instance of the library that use the same
  // token object nearly one at a time (each use takes the object's mutex and re-reads its
  // file under a file lock): in kms-provision's bulk import a second thread on a second
  // session of the same instance added 4 % to one thread's rate, on an instance of its own
  // 49-56 %. Bulk work that wants both cores then gives each extra thread an instance of
  // its own (TokenContext::Instance::separate).
  bool serialises_token_object_use = false;
};

// Objects created between two recycles of a leaking token when [token] recycle_after_objects
// is not set: about 250 bytes each on SoftHSM 2.6.1, so some 50 MB before it is given back.
inline constexpr std::uint64_t kDefaultRecycleAfterObjects = 200000;

// The pool's recycle_after_objects: the configured value when there is one (0: never),
// else kDefaultRecycleAfterObjects on a token that leaks destroyed session objects, else 0.
std::uint64_t recycle_threshold(const TokenQuirks& quirks, std::optional<std::uint64_t> configured);

// The quirks of the token behind this library and token description.
TokenQuirks detect_quirks(const CK_INFO& library, const CK_TOKEN_INFO& token);
// By configured name ("softhsm2", "nss", "standard"): "auto" is not accepted here (detect
// instead); std::invalid_argument for an unknown name.
TokenQuirks quirks_by_name(std::string_view name);

// True when rv from C_Decrypt (AEAD) or C_UnwrapKey means "this input does not
// authenticate under that key" on this token: the caller's fault, not the token's.
bool is_integrity_failure(const TokenQuirks& quirks, CK_RV rv) noexcept;

}  // namespace tokens
