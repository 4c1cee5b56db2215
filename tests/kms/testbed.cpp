#include "testbed.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "hsm/mechanism.h"
#include "tokens/key_templates.h"

namespace kmstest {

using kms::client::Bytes;

Testbed::Testbed(testsupport::TokenKind kind, TestbedOptions options)
    : options_(std::move(options)) {
  token_files_ = testsupport::TestToken::create(kind);
  database_path_ = options_.database.value_or(token_files_->dir() + "/kms.db");
  tokens::TokenConfig config;
  config.module = token_files_->module_path();
  config.init_reserved = token_files_->module_config().init_reserved;
  config.uri = token_files_->uri();
  config.pin_file = token_files_->pin_file();
  config.profile = token_files_->profile_name();
  config.database = database_path_;
  config.key_cache_size = 64;
  if (options_.quirks) config.quirks = *options_.quirks;
  config.read_only_sessions = options_.read_only_sessions;
  config.recycle_after_objects = options_.recycle_after_objects;
  if (options_.module_override) {
    setenv("KMS_FAULT_TARGET", token_files_->module_path().c_str(), 1);
    if (options_.record_file) setenv("KMS_PKCS11_RECORD", options_.record_file->c_str(), 1);
    config.module = *options_.module_override;
  }
  token_ = tokens::TokenContext::open(config);
  unsetenv("KMS_PKCS11_RECORD");

  // KMS keys: M (known value when asked), the storage and transport keys (generated), in a
  // read/write session of their own (as kms-provision would; the pool's may be read-only).
  // The pool's pinned session logged the application in.
  {
    hsm::Session session(token_->module(), token_->token().slot, true);
    hsm::AttributeTemplate master = tokens::templates::master_key(token_->profile());
    if (options_.master_key) {
      master.set_bytes(CKA_VALUE, *options_.master_key);
      session.create_object(std::move(master));
    } else {
      tokens::generate_aes_key(session, std::move(master));
    }
    tokens::generate_aes_key(session, tokens::templates::storage_key(token_->profile()));
    tokens::generate_aes_key(session, tokens::templates::transport_key(token_->profile()));
  }
  token_->require_kms_keys();

  database_ = std::make_unique<tokens::KeyDatabase>(database_path_);
  store_ =
      std::make_unique<tokens::KeyStore>(*token_, *database_, 64, options_.media_key_cache_size);
  registry_ = kms::open_conference_registry(database_path_, options_.registry);
  active_audit_ = options_.audit ? options_.audit : &audit_;
  build_services();
}

Testbed::~Testbed() {
  key_requests_.reset();
  bridges_.reset();
  registry_.reset();
  store_.reset();
  database_.reset();
  token_.reset();
}

kms::client::Profile Testbed::profile() const {
  return static_cast<kms::client::Profile>(token_->profile().wire_id());
}

void Testbed::build_services() {
  key_requests_ = std::make_unique<kms::TokenKeyRequestService>(*token_, *store_, *registry_,
                                                                *active_audit_, options_.service);
  bridges_ = std::make_unique<kms::TokenBridgeService>(*token_, *store_, *registry_, *active_audit_,
                                                       options_.service);
}

void Testbed::rebuild_services(kms::AuditSink& audit, kms::ServiceConfig config) {
  active_audit_ = &audit;
  options_.service = std::move(config);
  build_services();
}

void Testbed::reopen_registry() {
  key_requests_.reset();
  bridges_.reset();
  registry_.reset();
  registry_ = kms::open_conference_registry(database_path_, options_.registry);
  build_services();
}

void Testbed::add_root_key(tokens::IdentityKind kind, const std::string& id, const Bytes& key) {
  const hsm::Bytes wrapped = token_->pool().run([&](hsm::Session& session) {
    hsm::AttributeTemplate transit = tokens::templates::root_key_in_transit(token_->profile());
    transit.set_bytes(CKA_VALUE, key);
    hsm::ObjectGuard root(session, session.create_object(std::move(transit)));
    const CK_OBJECT_HANDLE storage =
        token_->pool().resolve(session, tokens::TokenContext::storage_key());
    hsm::Mechanism mechanism(token_->profile().wrap_mechanism);
    return session.wrap_key(mechanism, storage, root.get());
  });
  tokens::IdentityRecord record;
  record.identity = id;
  record.kind = kind;
  record.status = tokens::KeyStatus::active;
  record.key_version = 1;
  record.mode = tokens::KeyStoreMode::wrapped;
  record.wrapped_key = wrapped;
  database_->insert(record);
}

void Testbed::add_subscriber(const std::string& id, const Bytes& key) {
  add_root_key(tokens::IdentityKind::subscriber, id, key);
}

void Testbed::add_bridge(const std::string& id, const Bytes& key) {
  add_root_key(tokens::IdentityKind::bridge, id, key);
}

void Testbed::revoke(tokens::IdentityKind kind, const std::string& id) {
  ASSERT_TRUE(database_->set_status(kind, id, tokens::KeyStatus::revoked));
}

kms::client::UeClient Testbed::ue(const std::string& id, const Bytes& key) const {
  return kms::client::UeClient(id, key, 1, profile());
}

kms::client::BridgeClient Testbed::bridge(const std::string& id, const Bytes& key) const {
  return kms::client::BridgeClient(id, key, profile());
}

}  // namespace kmstest
