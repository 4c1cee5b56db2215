// Provisioner: one identity at a time (add, import, rotate, revoke, show).
#include "encoding.h"
#include "errors.h"
#include "hsm/error.h"
#include "provisioner.h"
#include "token_objects.h"
#include "tokens/key_templates.h"

namespace provisioning {

using tokens::IdentityKind;
using tokens::KeyStoreMode;
using namespace steps;

void require_ims_identity(const std::string& identity) {
  if (auto error = tokens::ims_identity_error(identity)) {
    throw InvalidIdentityError("\"" + identity + "\" is not an IMS public identity: " + *error);
  }
}

Provisioner::Provisioner(std::function<tokens::TokenContext&()> open_token,
                         tokens::KeyDatabase* database, KeyStoreMode mode)
    : open_token_(std::move(open_token)), database_(database), mode_(mode) {}

tokens::TokenContext& Provisioner::token() { return open_token_(); }

tokens::KeyDatabase& Provisioner::database() {
  if (database_ == nullptr) throw std::logic_error("no database opened");
  return *database_;
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

std::uint32_t Provisioner::rotate(IdentityKind kind, const std::string& identity,
                                  const ExportOptions& export_options,
                                  const std::optional<hsm::Bytes>& wrapped) {
  require_ims_identity(identity);
  const std::string what = describe(kind, identity);
  tokens::KeyDatabase::Transaction transaction(database());
  const auto record = database().find(kind, identity);
  if (!record) throw NotFoundError(what + " is not provisioned");
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
    throw NotFoundError(what + " is not provisioned");
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
  if (!record) throw NotFoundError(what + " is not provisioned");
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
  if (!record) throw NotFoundError(describe(kind, identity) + " is not provisioned");
  return *record;
}

}  // namespace provisioning
