#include "clone.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "clone_file.h"
#include "encoding.h"
#include "errors.h"
#include "token_objects.h"
#include "tokens/key_check_value.h"
#include "tokens/key_templates.h"

namespace provisioning {
namespace {

using namespace steps;

constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kMinimumComponents = 2;

const std::vector<hsm::KeyRef>& kms_key_refs() {
  static const std::vector<hsm::KeyRef> refs{tokens::master_key_ref(), tokens::storage_key_ref(),
                                             tokens::transport_key_ref()};
  return refs;
}

std::string hex(hsm::ByteView bytes) { return tokens::key_check_value_hex(bytes); }

// K_C = the XOR of the components (each a custodian's file).
struct CloningKey {
  hsm::SecureBytes value;
  std::vector<std::string> component_kcvs;
};

CloningKey combine_components(const std::vector<std::string>& files) {
  if (files.size() < kMinimumComponents) {
    throw UsageError("give the cloning key as at least " + std::to_string(kMinimumComponents) +
                     " --component files (split knowledge: one per custodian)");
  }
  CloningKey key{hsm::SecureBytes(kKeyBytes), {}};
  for (const std::string& path : files) {
    const hsm::SecureBytes component = read_key_file(path, "key component file");
    key.component_kcvs.push_back(hex(tokens::software_key_check_value(component.view())));
    for (std::size_t i = 0; i < kKeyBytes; ++i) key.value.data()[i] ^= component.data()[i];
  }
  return key;
}

// K_C as a session object: it never becomes a token object and goes with the session.
hsm::ObjectGuard cloning_key_object(hsm::Session& session, const CloningKey& key, bool wrap) {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, false)
      .set_bool(CKA_ENCRYPT, false)
      .set_bool(CKA_DECRYPT, false)
      .set_bool(CKA_DERIVE, false)
      .set_bool(CKA_WRAP, wrap)
      .set_bool(CKA_UNWRAP, true)
      .set_bytes(CKA_VALUE, key.value.view());
  return hsm::ObjectGuard(session, session.create_object(std::move(t)));
}

// The KMS templates (tokens/key_templates.h) the cloned keys are unwrapped with.
hsm::AttributeTemplate final_template(const tokens::TokenProfile& profile, const std::string& label,
                                      bool token_object) {
  hsm::AttributeTemplate t =
      label == tokens::kMasterKeyLabel    ? tokens::templates::master_key(profile)
      : label == tokens::kStorageKeyLabel ? tokens::templates::storage_key(profile)
                                          : tokens::templates::transport_key(profile);
  t.set_bool(CKA_TOKEN, token_object);
  return t;
}

// The KCV of a cloned key as installed (M derives, the storage key wraps, the transport key
// is checked against the check blob).
hsm::Bytes installed_kcv(hsm::Session& session, const tokens::TokenProfile& profile,
                         const std::string& label, CK_OBJECT_HANDLE key, const CloneFile& file) {
  if (label == tokens::kMasterKeyLabel) {
    return tokens::derive_key_check_value(session, profile, key);
  }
  if (label == tokens::kStorageKeyLabel) {
    const hsm::Bytes blob = tokens::wrap_check_blob(session, profile, key);
    return hsm::Bytes(blob.begin(), blob.begin() + tokens::kKeyCheckValueBytes);
  }
  if (!tokens::unwraps_check_blob(session, profile, key, file.transport_check)) return {};
  return hsm::Bytes(file.transport_check.begin(),
                    file.transport_check.begin() + tokens::kKeyCheckValueBytes);
}

hsm::AttributeTemplate transport_check_object(hsm::ByteView blob) {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_DATA)
      .set_bool(CKA_TOKEN, true)
      .set_bool(CKA_PRIVATE, false)  // public, as a KCV is
      .set_string(CKA_LABEL, std::string(tokens::kTransportCheckLabel))
      .set_bytes(CKA_VALUE, blob)
      .set_bool(CKA_MODIFIABLE, false);
  return t;
}

// The token objects a clone replaces: the KMS keys and the transport check blob.
std::vector<CK_OBJECT_HANDLE> transport_checks(hsm::Session& session) {
  hsm::AttributeTemplate match;
  match.set_ulong(CKA_CLASS, CKO_DATA)
      .set_string(CKA_LABEL, std::string(tokens::kTransportCheckLabel));
  return session.find(std::move(match), 16);
}

// Installs the keys of `file` under the cloning key `cloning_key`: each is first unwrapped
// as a session object and its KCV checked (nothing in the token changes if one fails),
// then the existing KMS keys are destroyed (force) and the token objects unwrapped.
CloneResult install(hsm::Session& session, const tokens::TokenProfile& profile,
                    CK_OBJECT_HANDLE cloning_key, const CloneFile& file, bool force,
                    const std::string& source) {
  if (file.profile != profile.name) {
    throw tokens::ConfigError(source + " holds keys of profile " + file.profile +
                              "; this token runs profile " + profile.name +
                              " (the KDF differs: the keys would derive other media keys)");
  }
  std::vector<CK_OBJECT_HANDLE> existing;
  std::vector<std::string> present;
  for (const hsm::KeyRef& ref : kms_key_refs()) {
    for (CK_OBJECT_HANDLE handle : find_by_label(session, ref.label)) {
      existing.push_back(handle);
      if (present.empty() || present.back() != ref.label) present.push_back(ref.label);
    }
  }
  if (!existing.empty() && !force) {
    std::string names;
    for (const auto& label : present) names += (names.empty() ? "" : ", ") + label;
    throw AlreadyExistsError("the token already holds the KMS keys " + names +
                             "; the clone installs them in a token without (--force replaces "
                             "them: every root key stored under the old storage key is lost)");
  }
  auto unwrap = [&](const ClonedKey& key, bool token_object) {
    try {
      return tokens::unwrap_aes_key(session, profile, cloning_key, key.wrapped,
                                    final_template(profile, key.label, token_object));
    } catch (const hsm::Error& error) {
      bad_key(profile, error, source + ": " + key.label, "the cloning key");
    }
  };

  CloneResult result;
  for (const hsm::KeyRef& ref : kms_key_refs()) {
    const ClonedKey& key = file.key(ref.label);
    hsm::ObjectGuard trial(session, unwrap(key, false));
    const hsm::Bytes kcv = installed_kcv(session, profile, key.label, trial.get(), file);
    if (kcv != key.kcv) {
      throw BadKeyMaterialError(
          source + ": " + key.label + " unwraps to a key with KCV " +
          (kcv.empty() ? std::string("(none: the check blob does not unwrap)") : hex(kcv)) +
          ", the file says " + hex(key.kcv));
    }
    result.keys.push_back({key.label, hex(kcv), {}});
  }
  result.replaced = present;
  for (CK_OBJECT_HANDLE handle : existing) session.destroy(handle);
  for (CK_OBJECT_HANDLE handle : transport_checks(session)) session.destroy(handle);
  std::vector<hsm::ObjectGuard> created;
  for (const hsm::KeyRef& ref : kms_key_refs()) {
    created.emplace_back(session, unwrap(file.key(ref.label), true));
  }
  try {
    created.emplace_back(session,
                         session.create_object(transport_check_object(file.transport_check)));
  } catch (const hsm::Error& error) {
    // NSS softoken keeps no token data objects (CKR_ATTRIBUTE_VALUE_INVALID): the transport
    // key was checked above, but status cannot show its KCV there.
    if (error.kind() != hsm::ErrorKind::pkcs11 || error.rv() != CKR_ATTRIBUTE_VALUE_INVALID) {
      throw;
    }
    result.note =
        "this token keeps no token data objects: the transport key's check blob is not stored, "
        "so status shows no KCV for it (it was checked now)";
  }
  for (auto& guard : created) guard.release();
  return result;
}

// A ceremony copy of a KMS key: a session object, extractable so that it can be wrapped
// under K_C, with the usage the KCV needs (M derives; the storage and transport copies
// wrap). It is destroyed when the export ends; the token objects are unwrapped from the
// clone file like in every other token.
hsm::AttributeTemplate ceremony_copy(const std::string& label) {
  namespace templates = tokens::templates;
  return templates::extractable_session_aes_key(label == tokens::kMasterKeyLabel
                                                    ? templates::TransitUse::derive
                                                    : templates::TransitUse::wrap_unwrap);
}

}  // namespace

std::string new_key_component(const std::string& out_path) {
  hsm::SecureBytes component(kKeyBytes);
  if (RAND_bytes(component.data(), static_cast<int>(component.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  std::string text = to_hex(component.view()) + "\n";
  try {
    write_new_file(out_path, text);
  } catch (...) {
    OPENSSL_cleanse(text.data(), text.size());
    throw;
  }
  OPENSSL_cleanse(text.data(), text.size());
  return hex(tokens::software_key_check_value(component.view()));
}

CloneResult clone_export(tokens::TokenContext& token, const CloneExportOptions& options) {
  if (options.out_path == "-") throw UsageError("clone export writes a file: --out - is refused");
  const CloningKey cloning = combine_components(options.component_files);
  std::optional<hsm::SecureBytes> transport_value;
  if (options.transport_key_file) {
    transport_value = read_key_file(*options.transport_key_file, "transport key file");
  }
  const tokens::TokenProfile& profile = token.profile();
  hsm::SessionPool::Lease lease = token.pool().acquire();
  hsm::Session& session = lease.session();

  hsm::ObjectGuard cloning_key = cloning_key_object(session, cloning, true);
  CloneFile file;
  file.profile = profile.name;
  file.cloning_key_kcv = tokens::software_key_check_value(cloning.value.view());
  std::vector<hsm::ObjectGuard> copies;
  for (const hsm::KeyRef& ref : kms_key_refs()) {
    hsm::AttributeTemplate t = ceremony_copy(ref.label);
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    if (ref.label == tokens::kTransportKeyLabel && transport_value) {
      t.set_bytes(CKA_VALUE, transport_value->view());
      handle = session.create_object(std::move(t));
    } else {
      handle = tokens::generate_aes_key(session, std::move(t));
    }
    copies.emplace_back(session, handle);
    ClonedKey key{ref.label, {}, wrap(session, profile, cloning_key.get(), handle)};
    if (ref.label == tokens::kMasterKeyLabel) {
      key.kcv = tokens::derive_key_check_value(session, profile, handle);
    } else {
      const hsm::Bytes blob = tokens::wrap_check_blob(session, profile, handle);
      key.kcv = hsm::Bytes(blob.begin(), blob.begin() + tokens::kKeyCheckValueBytes);
      if (ref.label == tokens::kTransportKeyLabel) file.transport_check = blob;
    }
    file.keys.push_back(std::move(key));
  }
  transport_value.reset();

  // The file first (it refuses to overwrite): if installing fails, it is removed again.
  write_new_file(options.out_path, format_clone_file(file));
  CloneResult result;
  try {
    result = install(session, profile, cloning_key.get(), file, options.force, options.out_path);
  } catch (...) {
    remove_file_quietly(options.out_path);
    throw;
  }
  token.pool().forget_handles();
  result.cloning_key_kcv = hex(file.cloning_key_kcv);
  result.component_kcvs = cloning.component_kcvs;
  return result;
}

CloneResult clone_import(tokens::TokenContext& token, const CloneImportOptions& options) {
  const CloneFile file = parse_clone_file(read_text_file(options.clone_file), options.clone_file);
  const CloningKey cloning = combine_components(options.component_files);
  const hsm::Bytes cloning_kcv = tokens::software_key_check_value(cloning.value.view());
  if (cloning_kcv != file.cloning_key_kcv) {
    throw BadKeyMaterialError("the key components make a cloning key with KCV " + hex(cloning_kcv) +
                              "; " + options.clone_file + " was made under KCV " +
                              hex(file.cloning_key_kcv) +
                              " (a wrong, missing or mistyped component: compare each "
                              "component's KCV with its custodian's record)");
  }
  const tokens::TokenProfile& profile = token.profile();
  hsm::SessionPool::Lease lease = token.pool().acquire();
  hsm::Session& session = lease.session();
  hsm::ObjectGuard cloning_key = cloning_key_object(session, cloning, false);
  CloneResult result =
      install(session, profile, cloning_key.get(), file, options.force, options.clone_file);
  token.pool().forget_handles();
  result.cloning_key_kcv = hex(cloning_kcv);
  result.component_kcvs = cloning.component_kcvs;
  return result;
}

std::vector<KeyCheckValue> kms_key_check_values(tokens::TokenContext& token) {
  const tokens::TokenProfile& profile = token.profile();
  hsm::SessionPool::Lease lease = token.pool().acquire();
  std::vector<KeyCheckValue> values;
  for (const hsm::KeyRef& ref : kms_key_refs()) {
    try {
      const auto kcv = tokens::kms_key_check_value(lease.session(), profile, ref.label);
      values.push_back({ref.label, kcv ? hex(*kcv) : std::string(), {}});
    } catch (const hsm::Error& error) {
      // A token that refuses a KCV step (e.g. an HSM without CKM_AES_ECB) still shows status.
      values.push_back({ref.label, {}, error.what()});
    }
  }
  return values;
}

}  // namespace provisioning
