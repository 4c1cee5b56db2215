// Provisioner: personalisation keys (imported under the transport key, listed).
#include <algorithm>

#include "errors.h"
#include "hsm/error.h"
#include "provisioner.h"
#include "token_objects.h"
#include "tokens/key_templates.h"

namespace provisioning {

using namespace steps;

void Provisioner::import_personalisation_key(const std::string& name, hsm::ByteView wrapped) {
  if (name.empty() || name.find_first_of(" \t\r\n/") != std::string::npos) {
    throw UsageError("personalisation key name \"" + name +
                     "\" must be non-empty without spaces or '/'");
  }
  const hsm::KeyRef ref = tokens::personalisation_key_ref(name);
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  if (!find_by_label(session, ref.label).empty()) {
    throw AlreadyExistsError("personalisation key " + name + " already exists");
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

}  // namespace provisioning
