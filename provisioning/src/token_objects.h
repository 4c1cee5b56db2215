// Shared steps of the Provisioner's operations (one file per operation group): finding the
// KMS's token objects, moving a root key in transit through the token (unwrap from the
// transport key, wrap under the storage key, export for personalisation), and the checks on
// key material. Throws the typed errors of errors.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hsm/error.h"
#include "hsm/secure_bytes.h"
#include "hsm/session_pool.h"
#include "provisioner.h"
#include "tokens/key_database.h"
#include "tokens/profile.h"

namespace provisioning::steps {

std::string describe(tokens::IdentityKind kind, const std::string& identity);

std::vector<CK_OBJECT_HANDLE> find_by_label(hsm::Session& session, const std::string& label);
// The one secret key labelled `label`, nullopt when there is none; TokenStateError when
// there are several.
std::optional<CK_OBJECT_HANDLE> find_one(hsm::Session& session, const std::string& label);
// The KMS key `ref`; tokens::NotInitialisedError when the token lacks it.
CK_OBJECT_HANDLE require_kms_key(hsm::Session& session, const hsm::KeyRef& ref);

// RFC 5649 of a 32-byte key is 40 bytes; shorter keys give shorter blobs.
void require_wrapped_aes256(hsm::ByteView wrapped, const std::string& what);
// SoftHSM leaves CKA_VALUE_LEN of an unwrapped key at 0; a token that reports it must
// report 32.
void require_aes256(hsm::Session& session, CK_OBJECT_HANDLE key, const std::string& what);
// A key-material failure of unwrap is the input's fault (BadKeyMaterialError), anything
// else the token's (rethrown).
[[noreturn]] void bad_key(const tokens::TokenProfile& profile, const hsm::Error& error,
                          const std::string& what,
                          const std::string& unwrapping_key = "the transport key");

hsm::Bytes wrap(hsm::Session& session, const tokens::TokenProfile& profile,
                CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key);

// The text written to --out for a root key in transit.
std::string export_key(hsm::Session& session, const tokens::TokenProfile& profile,
                       CK_OBJECT_HANDLE in_transit, const ExportOptions& options,
                       tokens::IdentityKind kind, const std::string& identity,
                       std::uint32_t key_version);

// Where a root key in transit goes: the database blob, and in token mode a token object.
struct Stored {
  hsm::Bytes wrapped;       // under the storage key; empty in token mode
  hsm::ObjectGuard object;  // token mode: the new token object, until committed
};
Stored store_root_key(hsm::Session& session, const tokens::TokenProfile& profile,
                      tokens::KeyStoreMode mode, tokens::IdentityKind kind,
                      const std::string& identity, std::uint32_t version,
                      CK_OBJECT_HANDLE in_transit);
// The same with the storage key's handle found by the caller (bulk import: once, not per key).
Stored store_root_key(hsm::Session& session, const tokens::TokenProfile& profile,
                      tokens::KeyStoreMode mode, tokens::IdentityKind kind,
                      const std::string& identity, std::uint32_t version,
                      CK_OBJECT_HANDLE in_transit, CK_OBJECT_HANDLE storage_key);

// The database record of a new identity (key version 1).
tokens::IdentityRecord new_identity_record(tokens::IdentityKind kind, const std::string& identity,
                                           tokens::KeyStoreMode mode, hsm::Bytes wrapped_key);

// Unwraps a key delivered under the transport key into a root key in transit.
hsm::ObjectGuard unwrap_transported(hsm::Session& session, const tokens::TokenProfile& profile,
                                    hsm::ByteView wrapped, const std::string& what);
// The same with the transport key's handle found by the caller.
hsm::ObjectGuard unwrap_transported(hsm::Session& session, const tokens::TokenProfile& profile,
                                    hsm::ByteView wrapped, const std::string& what,
                                    CK_OBJECT_HANDLE transport_key);

// For a single add or import, inside its transaction: the identity is valid and not yet
// provisioned. Returns its description for messages.
std::string require_new_identity(tokens::KeyDatabase& database, tokens::IdentityKind kind,
                                 const std::string& identity);

// An AES-256 key from a ceremony file (32 raw bytes, 64 hex digits or base64); `what`
// names it in the BadKeyMaterialError ("transport key file"). The copy read is wiped.
hsm::SecureBytes read_key_file(const std::string& path, const std::string& what);

}  // namespace provisioning::steps
