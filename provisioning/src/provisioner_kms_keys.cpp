// Provisioner: init (the KMS keys M, storage and transport) and their status.

#include "encoding.h"
#include "errors.h"
#include "hsm/error.h"
#include "provisioner.h"
#include "token_objects.h"
#include "tokens/key_templates.h"

namespace provisioning {
namespace {

using namespace steps;

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

InitResult Provisioner::init(const InitOptions& options) {
  std::optional<hsm::SecureBytes> transport_value;
  if (options.transport_key_file)
    transport_value = read_key_file(*options.transport_key_file, "transport key file");

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
        throw TokenStateError("the token holds " + std::to_string(slot.existing.size()) +
                              " keys labelled " + slot.ref.label +
                              " (use --force to replace them)");
      }
      if (slot.existing.size() == 1) {
        const std::string problems =
            mismatch(check_key(session, slot.existing.front(), slot.ref.label), profile);
        if (!problems.empty()) {
          throw AlreadyExistsError(slot.ref.label + " exists with unexpected attributes (" +
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

}  // namespace provisioning
