#include "token_objects.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "encoding.h"
#include "errors.h"
#include "hsm/error.h"
#include "tokens/key_templates.h"
#include "tokens/software_unwrap.h"
#include "tokens/token_context.h"
#include "tokens/token_quirks.h"

namespace provisioning::steps {
namespace {

using tokens::IdentityKind;
using tokens::KeyStoreMode;

constexpr CK_ULONG kRootKeyBytes = 32;
constexpr std::size_t kWrappedRootKeyBytes = 40;

// The header fields of an export file (format 2, docs/OPERATIONS.md "Root key export
// files"): `# name: value` lines after the descriptive comment, before the key line. Old
// readers see comments and the one hex line, as in format 1.
std::string export_header(const std::string& comment, IdentityKind kind,
                          const std::string& identity, std::uint32_t key_version,
                          const tokens::TokenProfile& profile, const std::string& wrapping) {
  return "# " + comment + "\n# format: 2\n# identity: " + identity +
         "\n# kind: " + std::string(tokens::kind_name(kind)) +
         "\n# key_version: " + std::to_string(key_version) + "\n# profile: " + profile.name +
         "\n# wrapping: " + wrapping + "\n";
}

}  // namespace

std::string describe(IdentityKind kind, const std::string& identity) {
  return std::string(tokens::kind_name(kind)) + " " + identity;
}

std::vector<CK_OBJECT_HANDLE> find_by_label(hsm::Session& session, const std::string& label) {
  hsm::AttributeTemplate match;
  match.set_ulong(CKA_CLASS, CKO_SECRET_KEY).set_string(CKA_LABEL, label);
  return session.find(std::move(match), 16);
}

std::optional<CK_OBJECT_HANDLE> find_one(hsm::Session& session, const std::string& label) {
  const auto found = find_by_label(session, label);
  if (found.empty()) return std::nullopt;
  if (found.size() > 1) {
    throw TokenStateError("the token holds " + std::to_string(found.size()) + " keys labelled " +
                          label + "; expected one");
  }
  return found.front();
}

CK_OBJECT_HANDLE require_kms_key(hsm::Session& session, const hsm::KeyRef& ref) {
  if (auto handle = find_one(session, ref.label)) return *handle;
  throw tokens::NotInitialisedError(
      "the token lacks the KMS key " + ref.label + " (run kms-provision init)", {ref.label});
}

[[noreturn]] void bad_key(const tokens::TokenProfile& profile, const hsm::Error& error,
                          const std::string& what, const std::string& unwrapping_key) {
  if (error.kind() == hsm::ErrorKind::pkcs11 &&
      tokens::is_integrity_failure(profile.quirks, error.rv())) {
    throw BadKeyMaterialError(what + ": the wrapped key does not unwrap under " + unwrapping_key +
                              " (" + hsm::rv_name(error.rv()) + ")");
  }
  throw error;
}

void require_wrapped_aes256(hsm::ByteView wrapped, const std::string& what) {
  if (wrapped.size() != kWrappedRootKeyBytes) {
    throw BadKeyMaterialError(what + ": the wrapped key is " + std::to_string(wrapped.size()) +
                              " bytes; an RFC 5649-wrapped AES-256 key (32 bytes) is 40");
  }
}

void require_aes256(hsm::Session& session, CK_OBJECT_HANDLE key, const std::string& what) {
  const CK_ULONG length = session.get_ulong(key, CKA_VALUE_LEN);
  if (length != 0 && length != kRootKeyBytes) {
    throw BadKeyMaterialError(what + ": the unwrapped key is " + std::to_string(length) +
                              " bytes, expected an AES-256 key (32 bytes)");
  }
}

hsm::Bytes wrap(hsm::Session& session, const tokens::TokenProfile& profile,
                CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key) {
  hsm::Mechanism mechanism(profile.wrap_mechanism);
  return session.wrap_key(mechanism, wrapping_key, key);
}

std::string export_key(hsm::Session& session, const tokens::TokenProfile& profile,
                       CK_OBJECT_HANDLE in_transit, const ExportOptions& options, IdentityKind kind,
                       const std::string& identity, std::uint32_t key_version) {
  if (options.insecure_plaintext) {
    // A one-time wrapping key of known value lets the plaintext out of the token.
    hsm::SecureBytes kek(32);
    if (RAND_bytes(kek.data(), static_cast<int>(kek.size())) != 1) {
      throw std::runtime_error("RAND_bytes failed");
    }
    hsm::AttributeTemplate attributes;
    attributes.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
        .set_ulong(CKA_KEY_TYPE, CKK_AES)
        .set_bool(CKA_TOKEN, false)
        .set_bool(CKA_PRIVATE, true)
        .set_bool(CKA_SENSITIVE, true)
        .set_bool(CKA_EXTRACTABLE, false)
        .set_bool(CKA_WRAP, true)
        .set_bytes(CKA_VALUE, kek.view());
    hsm::ObjectGuard kek_object(session, session.create_object(std::move(attributes)));
    const hsm::Bytes wrapped = wrap(session, profile, kek_object.get(), in_transit);
    const std::optional<hsm::SecureBytes> unwrapped = tokens::software_unwrap(kek.view(), wrapped);
    if (!unwrapped) throw std::runtime_error("software unwrap of the plaintext export failed");
    const hsm::SecureBytes& plaintext = *unwrapped;
    return export_header("INSECURE plaintext root key of " + identity + " (hex)", kind, identity,
                         key_version, profile, "none") +
           to_hex(plaintext.view()) + "\n";
  }
  const hsm::KeyRef ref = tokens::personalisation_key_ref(*options.personalisation_key);
  const auto personalisation = find_one(session, ref.label);
  if (!personalisation) {
    throw NotFoundError("personalisation key " + *options.personalisation_key +
                        " not found in the token (label " + ref.label + ")");
  }
  const hsm::Bytes wrapped = wrap(session, profile, *personalisation, in_transit);
  return export_header("root key of " + identity + ", RFC 5649-wrapped under personalisation key " +
                           *options.personalisation_key + " (hex)",
                       kind, identity, key_version, profile,
                       "personalisation-key " + *options.personalisation_key) +
         to_hex(wrapped) + "\n";
}

tokens::IdentityRecord new_identity_record(IdentityKind kind, const std::string& identity,
                                           KeyStoreMode mode, hsm::Bytes wrapped_key) {
  tokens::IdentityRecord record;
  record.identity = identity;
  record.kind = kind;
  record.mode = mode;
  record.wrapped_key = std::move(wrapped_key);
  return record;
}

Stored store_root_key(hsm::Session& session, const tokens::TokenProfile& profile, KeyStoreMode mode,
                      IdentityKind kind, const std::string& identity, std::uint32_t version,
                      CK_OBJECT_HANDLE in_transit) {
  return store_root_key(session, profile, mode, kind, identity, version, in_transit,
                        require_kms_key(session, tokens::storage_key_ref()));
}

Stored store_root_key(hsm::Session& session, const tokens::TokenProfile& profile, KeyStoreMode mode,
                      IdentityKind kind, const std::string& identity, std::uint32_t version,
                      CK_OBJECT_HANDLE in_transit, CK_OBJECT_HANDLE storage) {
  Stored stored;
  hsm::Bytes blob = wrap(session, profile, storage, in_transit);
  require_wrapped_aes256(blob, "the key of " + identity);
  if (mode == KeyStoreMode::wrapped) {
    stored.wrapped = std::move(blob);
    return stored;
  }
  const std::string label = tokens::root_key_label(kind, identity, version);
  if (!find_by_label(session, label).empty()) {
    throw AlreadyExistsError("the token already holds a key labelled " + label);
  }
  stored.object = hsm::ObjectGuard(
      session,
      tokens::unwrap_aes_key(session, profile, storage, blob,
                             tokens::templates::root_key(profile, kind, identity, version, true)));
  return stored;
}

hsm::ObjectGuard unwrap_transported(hsm::Session& session, const tokens::TokenProfile& profile,
                                    hsm::ByteView wrapped, const std::string& what) {
  return unwrap_transported(session, profile, wrapped, what,
                            require_kms_key(session, tokens::transport_key_ref()));
}

hsm::ObjectGuard unwrap_transported(hsm::Session& session, const tokens::TokenProfile& profile,
                                    hsm::ByteView wrapped, const std::string& what,
                                    CK_OBJECT_HANDLE transport) {
  require_wrapped_aes256(wrapped, what);
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  try {
    handle = tokens::unwrap_aes_key(session, profile, transport, wrapped,
                                    tokens::templates::root_key_in_transit(profile));
  } catch (const hsm::Error& error) {
    bad_key(profile, error, what);
  }
  hsm::ObjectGuard guard(session, handle);
  require_aes256(session, handle, what);
  return guard;
}

std::string require_new_identity(tokens::KeyDatabase& database, IdentityKind kind,
                                 const std::string& identity) {
  require_ims_identity(identity);
  std::string what = describe(kind, identity);
  if (database.find(kind, identity)) throw AlreadyExistsError(what + " already exists");
  return what;
}

hsm::SecureBytes read_key_file(const std::string& path, const std::string& what) {
  std::string text = read_text_file(path);
  hsm::SecureBytes key;
  if (text.size() == kRootKeyBytes) {
    key = hsm::SecureBytes(
        hsm::ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  } else if (auto decoded = decode_blob(text)) {
    key = hsm::SecureBytes(*decoded);
    OPENSSL_cleanse(decoded->data(), decoded->size());
  }
  OPENSSL_cleanse(text.data(), text.size());
  if (key.size() != kRootKeyBytes) {
    throw BadKeyMaterialError(what + " " + path +
                              ": expected 32 raw bytes, 64 hex digits or base64 of "
                              "32 bytes");
  }
  return key;
}

}  // namespace provisioning::steps
