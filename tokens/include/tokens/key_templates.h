// Attribute templates, one per key class. Every key is CKA_SENSITIVE=TRUE, private, never
// extractable in plaintext, and has exactly one purpose (decrypt, derive, wrap or unwrap;
// the storage key's one purpose is to wrap and unwrap root keys for the database).
// Templates carry class, key type, flags, label and ID; generate()/derive() add
// CKA_VALUE_LEN 32 (unwrap and create must not specify it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "hsm/attributes.h"
#include "hsm/session_pool.h"
#include "tokens/identity.h"
#include "tokens/profile.h"

namespace tokens {

// Labels (CKA_LABEL) and IDs (CKA_ID = the label's bytes) of the KMS's own token objects.
inline constexpr std::string_view kMasterKeyLabel = "kms/master";
inline constexpr std::string_view kStorageKeyLabel = "kms/storage";
inline constexpr std::string_view kTransportKeyLabel = "kms/transport";
inline constexpr std::string_view kPersonalisationKeyPrefix = "kms/personalisation/";

hsm::KeyRef master_key_ref();
hsm::KeyRef storage_key_ref();
hsm::KeyRef transport_key_ref();
hsm::KeyRef personalisation_key_ref(std::string_view name);  // "kms/personalisation/<name>"
// Token mode: "kms/subscriber/<identity>/v<N>" or "kms/bridge/<identity>/v<N>".
std::string root_key_label(IdentityKind kind, std::string_view identity, std::uint32_t version);
hsm::KeyRef root_key_ref(IdentityKind kind, std::string_view identity, std::uint32_t version);

namespace templates {

// Long-term keys (M, the storage, transport and personalisation keys, token-mode root keys)
// and every root key the KMS creates carry CKA_MODIFIABLE=FALSE and, where the token
// supports it (TokenQuirks::supports_copyable), CKA_COPYABLE=FALSE: no usage flag can be
// widened later, by C_SetAttributeValue or through a copy. The profile's quirks decide which
// custody attributes the token gets (docs/ARCHITECTURE.md "Key custody").

// Master derivation key M: token object, CKA_DERIVE only, generated in the token. Not
// extractable, except on profiles with extractable_base_for_extractable_children (NSS
// SP 800-108), where it is extractable with CKA_WRAP_WITH_TRUSTED=TRUE (no trusted wrapping
// key exists, so it still cannot leave the token on a token that enforces the flag).
hsm::AttributeTemplate master_key(const TokenProfile& profile);
// Storage key: token object, CKA_WRAP + CKA_UNWRAP (root keys to and from the database).
// Where the token supports them: CKA_UNWRAP_TEMPLATE = storage_unwrap_template() (a stored
// root key can only come out sensitive, not extractable, CKA_DERIVE only, fixed) and
// CKA_WRAP_TEMPLATE = root_key_wrap_template() (it wraps nothing but root keys).
hsm::AttributeTemplate storage_key(const TokenProfile& profile);
// Transport key: token object, CKA_UNWRAP only (ceremony imports). Where supported:
// CKA_UNWRAP_TEMPLATE = transport_unwrap_template().
hsm::AttributeTemplate transport_key(const TokenProfile& profile);
// Personalisation key: token object, CKA_WRAP only (exports a new root key for a UE/bridge).
// Where supported: CKA_WRAP_TEMPLATE = root_key_wrap_template().
hsm::AttributeTemplate personalisation_key(const TokenProfile& profile, std::string_view name);

// The nested templates: what the storage key may unwrap (class AES secret, sensitive, not
// extractable, CKA_DERIVE only, fixed); what the transport key may unwrap (sensitive, fixed,
// no encrypt/decrypt/unwrap/sign/verify: it also unwraps extractable root keys in transit
// and CKA_WRAP personalisation keys); what the storage and personalisation keys may wrap
// (sensitive AES keys with CKA_DERIVE only: root keys).
hsm::AttributeTemplate storage_unwrap_template(const TokenProfile& profile);
hsm::AttributeTemplate transport_unwrap_template(const TokenProfile& profile);
hsm::AttributeTemplate root_key_wrap_template();

// Subscriber or bridge root key as used for requests: CKA_DERIVE only, not extractable.
// token_object=false: a session object unwrapped from the database (wrapped mode);
// token_object=true: a token object labelled root_key_label() (token mode).
hsm::AttributeTemplate root_key(const TokenProfile& profile, IdentityKind kind,
                                std::string_view identity, std::uint32_t version,
                                bool token_object);
// A root key in transit (just generated, or unwrapped from the transport key): session
// object, CKA_DERIVE only, extractable so that it can be wrapped under the storage and
// personalisation keys; destroyed right after.
hsm::AttributeTemplate root_key_in_transit(const TokenProfile& profile);

// Children derived per request (session objects, destroyed after use):
hsm::AttributeTemplate envelope_key();       // KE_X: AES, CKA_DECRYPT only
hsm::AttributeTemplate response_key();       // KR_X: AES, CKA_DERIVE only
hsm::AttributeTemplate response_wrap_key();  // W: AES, CKA_WRAP only
hsm::AttributeTemplate bridge_wrap_key();    // BW: AES, CKA_WRAP only
// Media key K: CKK_GENERIC_SECRET, sensitive, extractable (only to be wrapped: it has no
// other use), session object.
hsm::AttributeTemplate media_key();

// An extractable AES session key that exists only to be wrapped by a KMS key or to wrap
// one, then destroyed: the key check values' check key (CKA_DERIVE, with its CKA_VALUE added
// by the caller) and the cloning ceremony's copies of the KMS keys (CKA_DERIVE for M,
// CKA_WRAP + CKA_UNWRAP for the others). No other usage flag.
enum class TransitUse { derive, wrap_unwrap };
hsm::AttributeTemplate extractable_session_aes_key(TransitUse use);

}  // namespace templates

// Generates an AES-256 key (CKM_AES_KEY_GEN, CKA_VALUE_LEN 32) with `attributes`.
CK_OBJECT_HANDLE generate_aes_key(hsm::Session& session, hsm::AttributeTemplate attributes);
// Unwraps an RFC 5649-wrapped AES-256 key (40 bytes; anything else is refused with
// hsm::Error(CKR_WRAPPED_KEY_LEN_RANGE)) under `unwrapping_key`. CKA_VALUE_LEN is not set:
// SoftHSM refuses it in an unwrap template (CKR_ATTRIBUTE_READ_ONLY) and then reports 0.
CK_OBJECT_HANDLE unwrap_aes_key(hsm::Session& session, const TokenProfile& profile,
                                CK_OBJECT_HANDLE unwrapping_key, hsm::ByteView wrapped,
                                hsm::AttributeTemplate attributes);

}  // namespace tokens
