#include "provisioner.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <map>

#include "encoding.h"
#include "exit_codes.h"
#include "hsm/error.h"
#include "tokens/key_templates.h"

namespace provisioning {
namespace {

using tokens::IdentityKind;
using tokens::KeyStoreMode;

constexpr CK_ULONG kRootKeyBytes = 32;

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
    throw CliError(kTokenError, "the token holds " + std::to_string(found.size()) +
                                    " keys labelled " + label + "; expected one");
  }
  return found.front();
}

CK_OBJECT_HANDLE require_kms_key(hsm::Session& session, const hsm::KeyRef& ref) {
  if (auto handle = find_one(session, ref.label)) return *handle;
  throw CliError(kNotInitialised,
                 "the token lacks the KMS key " + ref.label + " (run kms-provision init)");
}

// A key-material failure of unwrap is the input's fault, anything else the token's. Tokens
// report a failed RFC 5649 integrity check differently (SoftHSM: CKR_GENERAL_ERROR): the
// token's quirks decide.
[[noreturn]] void bad_key(const tokens::TokenProfile& profile, const hsm::Error& error,
                          const std::string& what) {
  if (error.kind() == hsm::ErrorKind::pkcs11 &&
      tokens::is_integrity_failure(profile.quirks, error.rv())) {
    throw CliError(kBadKeyMaterial, what +
                                        ": the wrapped key does not unwrap under the "
                                        "transport key (" +
                                        hsm::rv_name(error.rv()) + ")");
  }
  throw error;
}

// RFC 5649 of a 32-byte key is 40 bytes; shorter keys give shorter blobs.
constexpr std::size_t kWrappedRootKeyBytes = 40;

void require_wrapped_aes256(hsm::ByteView wrapped, const std::string& what) {
  if (wrapped.size() != kWrappedRootKeyBytes) {
    throw CliError(kBadKeyMaterial, what + ": the wrapped key is " +
                                        std::to_string(wrapped.size()) +
                                        " bytes; an RFC 5649-wrapped AES-256 key (32 bytes) is 40");
  }
}

// SoftHSM leaves CKA_VALUE_LEN of an unwrapped key at 0; a token that reports it must
// report 32.
void require_aes256(hsm::Session& session, CK_OBJECT_HANDLE key, const std::string& what) {
  const CK_ULONG length = session.get_ulong(key, CKA_VALUE_LEN);
  if (length != 0 && length != kRootKeyBytes) {
    throw CliError(kBadKeyMaterial, what + ": the unwrapped key is " + std::to_string(length) +
                                        " bytes, expected an AES-256 key (32 bytes)");
  }
}

hsm::Bytes wrap(hsm::Session& session, const tokens::TokenProfile& profile,
                CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key) {
  hsm::Mechanism mechanism(profile.wrap_mechanism);
  return session.wrap_key(mechanism, wrapping_key, key);
}

// RFC 5649 unwrap in software, only for --insecure-plaintext-export.
hsm::SecureBytes software_unwrap(hsm::ByteView kek, hsm::ByteView wrapped) {
  hsm::SecureBytes out(wrapped.size());
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int length = 0;
  int final_length = 0;
  bool ok = false;
  if (ctx != nullptr) {
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr) == 1 &&
         EVP_DecryptUpdate(ctx, out.data(), &length, wrapped.data(),
                           static_cast<int>(wrapped.size())) == 1 &&
         EVP_DecryptFinal_ex(ctx, out.data() + length, &final_length) == 1;
    EVP_CIPHER_CTX_free(ctx);
  }
  if (!ok) throw CliError(kInternalError, "software unwrap of the plaintext export failed");
  out.resize(static_cast<std::size_t>(length + final_length));
  return out;
}

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

// The text written to --out.
std::string export_key(hsm::Session& session, const tokens::TokenProfile& profile,
                       CK_OBJECT_HANDLE in_transit, const ExportOptions& options, IdentityKind kind,
                       const std::string& identity, std::uint32_t key_version) {
  if (options.insecure_plaintext) {
    // A one-time wrapping key of known value lets the plaintext out of the token.
    hsm::SecureBytes kek(32);
    if (RAND_bytes(kek.data(), static_cast<int>(kek.size())) != 1) {
      throw CliError(kInternalError, "RAND_bytes failed");
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
    const hsm::SecureBytes plaintext = software_unwrap(kek.view(), wrapped);
    return export_header("INSECURE plaintext root key of " + identity + " (hex)", kind, identity,
                         key_version, profile, "none") +
           to_hex(plaintext.view()) + "\n";
  }
  const hsm::KeyRef ref = tokens::personalisation_key_ref(*options.personalisation_key);
  const auto personalisation = find_one(session, ref.label);
  if (!personalisation) {
    throw CliError(kNotFound, "personalisation key " + *options.personalisation_key +
                                  " not found in the token (label " + ref.label + ")");
  }
  const hsm::Bytes wrapped = wrap(session, profile, *personalisation, in_transit);
  return export_header("root key of " + identity + ", RFC 5649-wrapped under personalisation key " +
                           *options.personalisation_key + " (hex)",
                       kind, identity, key_version, profile,
                       "personalisation-key " + *options.personalisation_key) +
         to_hex(wrapped) + "\n";
}

// Where a root key in transit goes: the database blob, and in token mode a token object.
struct Stored {
  hsm::Bytes wrapped;       // under the storage key; empty in token mode
  hsm::ObjectGuard object;  // token mode: the new token object, until committed
};

// The database record of a new identity (key version 1).
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
  const CK_OBJECT_HANDLE storage = require_kms_key(session, tokens::storage_key_ref());
  Stored stored;
  hsm::Bytes blob = wrap(session, profile, storage, in_transit);
  require_wrapped_aes256(blob, "the key of " + identity);
  if (mode == KeyStoreMode::wrapped) {
    stored.wrapped = std::move(blob);
    return stored;
  }
  const std::string label = tokens::root_key_label(kind, identity, version);
  if (!find_by_label(session, label).empty()) {
    throw CliError(kAlreadyExists, "the token already holds a key labelled " + label);
  }
  stored.object = hsm::ObjectGuard(
      session,
      tokens::unwrap_aes_key(session, profile, storage, blob,
                             tokens::templates::root_key(profile, kind, identity, version, true)));
  return stored;
}

// Unwraps a key delivered under the transport key into a root key in transit.
hsm::ObjectGuard unwrap_transported(hsm::Session& session, const tokens::TokenProfile& profile,
                                    hsm::ByteView wrapped, const std::string& what) {
  const CK_OBJECT_HANDLE transport = require_kms_key(session, tokens::transport_key_ref());
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

hsm::SecureBytes read_transport_key(const std::string& path) {
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
    throw CliError(kBadKeyMaterial, "transport key file " + path +
                                        ": expected 32 raw bytes, 64 hex digits or base64 of "
                                        "32 bytes");
  }
  return key;
}

KeyCheck check_key(hsm::Session& session, CK_OBJECT_HANDLE key, const std::string& label) {
  KeyCheck check;
  check.label = label;
  check.sensitive = session.get_bool(key, CKA_SENSITIVE);
  check.extractable = session.get_bool(key, CKA_EXTRACTABLE);
  check.encrypt = session.get_bool(key, CKA_ENCRYPT);
  check.decrypt = session.get_bool(key, CKA_DECRYPT);
  check.derive = session.get_bool(key, CKA_DERIVE);
  check.wrap = session.get_bool(key, CKA_WRAP);
  check.unwrap = session.get_bool(key, CKA_UNWRAP);
  check.modifiable = session.get_bool(key, CKA_MODIFIABLE);
  return check;
}

// The attributes each KMS key must have; empty when they match.
std::string mismatch(const KeyCheck& check, const tokens::TokenProfile& profile) {
  struct Expected {
    bool derive, wrap, unwrap, extractable;
  };
  Expected expected{};
  if (check.label == tokens::kMasterKeyLabel) {
    expected = {true, false, false, profile.extractable_base_for_extractable_children};
  } else if (check.label == tokens::kStorageKeyLabel) {
    expected = {false, true, true, false};
  } else {
    expected = {false, false, true, false};
  }
  std::string problems;
  auto add = [&](bool ok, const char* what) {
    if (!ok) problems += (problems.empty() ? "" : ", ") + std::string(what);
  };
  add(check.sensitive, "not sensitive");
  add(check.extractable == expected.extractable, "extractability");
  add(!check.encrypt && !check.decrypt, "encrypt/decrypt allowed");
  add(check.derive == expected.derive, "derive");
  add(check.wrap == expected.wrap, "wrap");
  add(check.unwrap == expected.unwrap, "unwrap");
  return problems;
}

}  // namespace

void require_ims_identity(const std::string& identity) {
  if (auto error = tokens::ims_identity_error(identity)) {
    throw CliError(kInvalidIdentity,
                   "\"" + identity + "\" is not an IMS public identity: " + *error);
  }
}

namespace {

// For a single add or import, inside its transaction: the identity is valid and not yet
// provisioned. Returns its description for messages.
std::string require_new_identity(tokens::KeyDatabase& database, IdentityKind kind,
                                 const std::string& identity) {
  require_ims_identity(identity);
  std::string what = describe(kind, identity);
  if (database.find(kind, identity)) throw CliError(kAlreadyExists, what + " already exists");
  return what;
}

}  // namespace

Provisioner::Provisioner(std::function<tokens::TokenContext&()> open_token,
                         tokens::KeyDatabase* database, KeyStoreMode mode)
    : open_token_(std::move(open_token)), database_(database), mode_(mode) {}

tokens::TokenContext& Provisioner::token() { return open_token_(); }

tokens::KeyDatabase& Provisioner::database() {
  if (database_ == nullptr) throw CliError(kInternalError, "no database opened");
  return *database_;
}

InitResult Provisioner::init(const InitOptions& options) {
  std::optional<hsm::SecureBytes> transport_value;
  if (options.transport_key_file) transport_value = read_transport_key(*options.transport_key_file);

  const tokens::TokenProfile& profile = token().profile();
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();

  struct Slot {
    hsm::KeyRef ref;
    std::vector<CK_OBJECT_HANDLE> existing;
  };
  std::vector<Slot> slots;
  for (const hsm::KeyRef& ref :
       {tokens::master_key_ref(), tokens::storage_key_ref(), tokens::transport_key_ref()}) {
    slots.push_back({ref, find_by_label(session, ref.label)});
  }

  InitResult result;
  if (!options.force) {
    for (const Slot& slot : slots) {
      if (slot.existing.size() > 1) {
        throw CliError(kTokenError, "the token holds " + std::to_string(slot.existing.size()) +
                                        " keys labelled " + slot.ref.label +
                                        " (use --force to replace them)");
      }
      if (slot.existing.size() == 1) {
        const std::string problems =
            mismatch(check_key(session, slot.existing.front(), slot.ref.label), profile);
        if (!problems.empty()) {
          throw CliError(kAlreadyExists, slot.ref.label + " exists with unexpected attributes (" +
                                             problems + "); use --force to replace it");
        }
      }
    }
  }

  // The keys to create, each with its final label and ID: long-term keys are
  // CKA_MODIFIABLE=FALSE, so a replacement cannot be created under a temporary name and
  // renamed afterwards (and some tokens, NSS among them, misbehave with two token objects of
  // the same label and ID). A replacement is therefore tried first as a session object:
  // what the token refuses (a template, a value) fails before any old key is destroyed.
  struct Creation {
    const Slot* slot;
    hsm::AttributeTemplate attributes;
    bool from_value;
  };
  std::vector<Creation> creations;
  for (const Slot& slot : slots) {
    if (!slot.existing.empty() && !options.force) {
      result.present.push_back(slot.ref.label);
      continue;
    }
    Creation creation{&slot, {}, false};
    if (slot.ref.label == tokens::kMasterKeyLabel) {
      creation.attributes = tokens::templates::master_key(profile);
    } else if (slot.ref.label == tokens::kStorageKeyLabel) {
      creation.attributes = tokens::templates::storage_key(profile);
    } else {
      creation.attributes = tokens::templates::transport_key(profile);
      creation.from_value = transport_value.has_value();
    }
    creations.push_back(std::move(creation));
  }
  auto create = [&](const Creation& creation, bool token_object) {
    hsm::AttributeTemplate attributes = creation.attributes;
    attributes.set_bool(CKA_TOKEN, token_object);
    if (!creation.from_value) return tokens::generate_aes_key(session, std::move(attributes));
    attributes.set_bytes(CKA_VALUE, transport_value->view());
    return session.create_object(std::move(attributes));
  };
  if (options.force) {
    for (const Creation& creation : creations) {
      if (!creation.slot->existing.empty()) {
        hsm::ObjectGuard trial(session, create(creation, false));  // destroyed at once
      }
    }
    for (const Creation& creation : creations) {
      for (CK_OBJECT_HANDLE old : creation.slot->existing) session.destroy(old);
    }
  }
  std::vector<hsm::ObjectGuard> created;
  for (const Creation& creation : creations) {
    created.emplace_back(session, create(creation, true));
    if (creation.from_value) result.transport_key_imported = true;
    (creation.slot->existing.empty() ? result.created : result.replaced)
        .push_back(creation.slot->ref.label);
  }
  if (transport_value && !result.transport_key_imported) {
    result.note =
        "the transport key is already in the token; --transport-key-file was not "
        "used (--force replaces it)";
  }
  transport_value.reset();
  for (auto& guard : created) guard.release();
  token().pool().forget_handles();
  return result;
}

std::vector<KeyCheck> Provisioner::kms_keys() {
  hsm::SessionPool::Lease lease = token().pool().acquire();
  std::vector<KeyCheck> checks;
  for (const hsm::KeyRef& ref :
       {tokens::master_key_ref(), tokens::storage_key_ref(), tokens::transport_key_ref()}) {
    for (CK_OBJECT_HANDLE handle : find_by_label(lease.session(), ref.label)) {
      checks.push_back(check_key(lease.session(), handle, ref.label));
    }
  }
  return checks;
}

void Provisioner::import_personalisation_key(const std::string& name, hsm::ByteView wrapped) {
  if (name.empty() || name.find_first_of(" \t\r\n/") != std::string::npos) {
    throw CliError(kUsage, "personalisation key name \"" + name +
                               "\" must be non-empty without spaces or '/'");
  }
  const hsm::KeyRef ref = tokens::personalisation_key_ref(name);
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  if (!find_by_label(session, ref.label).empty()) {
    throw CliError(kAlreadyExists, "personalisation key " + name + " already exists");
  }
  const CK_OBJECT_HANDLE transport = require_kms_key(session, tokens::transport_key_ref());
  require_wrapped_aes256(wrapped, "personalisation key " + name);
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  try {
    handle =
        tokens::unwrap_aes_key(session, token().profile(), transport, wrapped,
                               tokens::templates::personalisation_key(token().profile(), name));
  } catch (const hsm::Error& error) {
    bad_key(token().profile(), error, "personalisation key " + name);
  }
  hsm::ObjectGuard guard(session, handle);
  require_aes256(session, handle, "personalisation key " + name);
  guard.release();
}

std::vector<std::string> Provisioner::personalisation_keys() {
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  hsm::AttributeTemplate match;
  match.set_ulong(CKA_CLASS, CKO_SECRET_KEY).set_bool(CKA_TOKEN, true);
  std::vector<std::string> names;
  for (CK_OBJECT_HANDLE handle : session.find(std::move(match), 1 << 20)) {
    const std::string label = session.get_string(handle, CKA_LABEL);
    if (label.starts_with(tokens::kPersonalisationKeyPrefix)) {
      names.push_back(label.substr(tokens::kPersonalisationKeyPrefix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

void Provisioner::add_generated(IdentityKind kind, const std::string& identity,
                                const ExportOptions& export_options) {
  tokens::KeyDatabase::Transaction transaction(database());
  require_new_identity(database(), kind, identity);

  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  const tokens::TokenProfile& profile = token().profile();
  hsm::ObjectGuard in_transit(
      session, tokens::generate_aes_key(session, tokens::templates::root_key_in_transit(profile)));
  const std::string exported =
      export_key(session, profile, in_transit.get(), export_options, kind, identity, 1);
  Stored stored = store_root_key(session, profile, mode_, kind, identity, 1, in_transit.get());

  database().insert(new_identity_record(kind, identity, mode_, std::move(stored.wrapped)));
  write_new_file(export_options.out_path, exported);
  try {
    transaction.commit();
  } catch (...) {
    remove_file_quietly(export_options.out_path);
    throw;
  }
  stored.object.release();
}

void Provisioner::import_wrapped(IdentityKind kind, const std::string& identity,
                                 hsm::ByteView wrapped) {
  tokens::KeyDatabase::Transaction transaction(database());
  const std::string what = require_new_identity(database(), kind, identity);
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  const tokens::TokenProfile& profile = token().profile();
  hsm::ObjectGuard in_transit = unwrap_transported(session, profile, wrapped, what);
  Stored stored = store_root_key(session, profile, mode_, kind, identity, 1, in_transit.get());
  database().insert(new_identity_record(kind, identity, mode_, std::move(stored.wrapped)));
  transaction.commit();
  stored.object.release();
}

ImportResult Provisioner::import_bulk(IdentityKind kind, const BulkFile& file,
                                      std::size_t batch_size) {
  ImportResult result;
  result.unit = file.unit;
  result.failed = file.problems;
  if (batch_size == 0) batch_size = 1;
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  const tokens::TokenProfile& profile = token().profile();
  require_kms_key(session, tokens::transport_key_ref());
  require_kms_key(session, tokens::storage_key_ref());

  for (std::size_t start = 0; start < file.entries.size(); start += batch_size) {
    const std::size_t end = std::min(file.entries.size(), start + batch_size);
    tokens::KeyDatabase::Transaction transaction(database());
    std::vector<hsm::ObjectGuard> objects;  // token mode, released after commit
    std::size_t imported = 0;
    for (std::size_t i = start; i < end; ++i) {
      const BulkEntry& entry = file.entries[i];
      try {
        require_ims_identity(entry.identity);
        const std::string what = describe(kind, entry.identity);
        auto wrapped = decode_blob(entry.wrapped_key);
        if (!wrapped) throw CliError(kBadKeyMaterial, "wrapped_key is neither hex nor base64");
        if (database().find(kind, entry.identity)) {
          throw CliError(kAlreadyExists, what + " already exists");
        }
        hsm::ObjectGuard in_transit = unwrap_transported(session, profile, *wrapped, what);
        Stored stored =
            store_root_key(session, profile, mode_, kind, entry.identity, 1, in_transit.get());
        database().insert(
            new_identity_record(kind, entry.identity, mode_, std::move(stored.wrapped)));
        if (stored.object.get() != CK_INVALID_HANDLE) objects.push_back(std::move(stored.object));
        ++imported;
      } catch (const CliError& error) {
        if (error.code() != kInvalidIdentity && error.code() != kBadKeyMaterial &&
            error.code() != kAlreadyExists) {
          throw;
        }
        result.failed.push_back({entry.number, entry.identity, error.what()});
      } catch (const tokens::DuplicateIdentityError& error) {
        result.failed.push_back({entry.number, entry.identity, error.what()});
      }
    }
    transaction.commit();
    for (auto& object : objects) object.release();
    result.imported += imported;
  }
  std::sort(result.failed.begin(), result.failed.end(),
            [](const BulkProblem& a, const BulkProblem& b) { return a.number < b.number; });
  return result;
}

std::uint32_t Provisioner::rotate(IdentityKind kind, const std::string& identity,
                                  const ExportOptions& export_options,
                                  const std::optional<hsm::Bytes>& wrapped) {
  require_ims_identity(identity);
  const std::string what = describe(kind, identity);
  tokens::KeyDatabase::Transaction transaction(database());
  const auto record = database().find(kind, identity);
  if (!record) throw CliError(kNotFound, what + " is not provisioned");
  const std::uint32_t version = record->key_version + 1;

  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  const tokens::TokenProfile& profile = token().profile();
  hsm::ObjectGuard in_transit;
  std::string exported;
  if (wrapped) {
    in_transit = unwrap_transported(session, profile, *wrapped, what);
  } else {
    in_transit = hsm::ObjectGuard(
        session,
        tokens::generate_aes_key(session, tokens::templates::root_key_in_transit(profile)));
    exported =
        export_key(session, profile, in_transit.get(), export_options, kind, identity, version);
  }
  Stored stored =
      store_root_key(session, profile, mode_, kind, identity, version, in_transit.get());
  if (!database().replace_key(kind, identity, version, mode_, stored.wrapped)) {
    throw CliError(kNotFound, what + " is not provisioned");
  }
  if (!wrapped) write_new_file(export_options.out_path, exported);
  try {
    transaction.commit();
  } catch (...) {
    if (!wrapped) remove_file_quietly(export_options.out_path);
    throw;
  }
  stored.object.release();
  if (record->mode == KeyStoreMode::token) {
    for (CK_OBJECT_HANDLE old :
         find_by_label(session, tokens::root_key_label(kind, identity, record->key_version))) {
      session.destroy(old);
    }
  }
  return version;
}

void Provisioner::revoke(IdentityKind kind, const std::string& identity) {
  require_ims_identity(identity);
  const std::string what = describe(kind, identity);
  tokens::KeyDatabase::Transaction transaction(database());
  const auto record = database().find(kind, identity);
  if (!record) throw CliError(kNotFound, what + " is not provisioned");
  database().set_status(kind, identity, tokens::KeyStatus::revoked);
  transaction.commit();
  if (record->mode == KeyStoreMode::token) {
    // The key has no further use; a token object would only be a liability.
    hsm::SessionPool::Lease lease = token().pool().acquire();
    for (CK_OBJECT_HANDLE old : find_by_label(
             lease.session(), tokens::root_key_label(kind, identity, record->key_version))) {
      lease.session().destroy(old);
    }
  }
}

tokens::IdentityRecord Provisioner::show(IdentityKind kind, const std::string& identity) {
  require_ims_identity(identity);
  auto record = database().find(kind, identity);
  if (!record) throw CliError(kNotFound, describe(kind, identity) + " is not provisioned");
  return *record;
}

}  // namespace provisioning
