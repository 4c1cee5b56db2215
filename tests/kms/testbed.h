// A complete in-process KMS on a fresh real token (SoftHSM or NSS softoken): token context,
// key database + store, KMS keys with known values (so test vectors can be checked on the
// token path), subscribers and bridges provisioned with known root keys, the registry
// (SQLite, or the database options name), an audit sink and both services. Also the UE/bridge side
// (kms_client).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "audit_sinks.h"
#include "kms/client/bridge_client.h"
#include "kms/client/ue_client.h"
#include "kms/core/bridge_service.h"
#include "kms/core/key_request_service.h"
#include "kms/core/stored_conference_registry.h"
#include "protocol_error_of.h"
#include "support/test_token.h"
#include "tokens/key_database.h"
#include "tokens/key_store.h"
#include "tokens/token_context.h"

namespace kmstest {

struct TestbedOptions {
  std::optional<kms::client::Bytes> master_key;  // known M; default random (generated)
  kms::ServiceConfig service;                    // clock etc.
  kms::RegistryOptions registry;
  // The key database and registry (a database URL, e.g. a PostgreSQL test database);
  // default an SQLite file in the token's folder.
  std::optional<std::string> database;
  kms::AuditSink* audit = nullptr;  // default: the testbed's RecordingAuditSink
  // Load this module instead of the token's (the recording/fault module of tests/hsm);
  // KMS_FAULT_TARGET is set to the real module, and KMS_PKCS11_RECORD to record_file.
  std::optional<std::string> module_override;
  std::optional<std::string> record_file;
  std::optional<std::string> quirks;  // [token] quirks; default auto (detected)
  // The pool's sessions are read-only, as kmsd's are by default (the KMS keys are created
  // in a separate read/write session); false: read/write, as kms-provision's.
  bool read_only_sessions = true;
  // [token] recycle_after_objects; default unset (the token quirks decide).
  std::optional<std::uint64_t> recycle_after_objects;
  // [token] media_key_cache_size (tokens/derived_key_cache.h).
  std::size_t media_key_cache_size = 1024;
};

class Testbed {
 public:
  Testbed(testsupport::TokenKind kind, TestbedOptions options = {});
  ~Testbed();

  kms::client::Profile profile() const;
  tokens::TokenContext& token() { return *token_; }
  tokens::KeyDatabase& database() { return *database_; }
  tokens::KeyStore& store() { return *store_; }
  kms::StoredConferenceRegistry& registry() { return *registry_; }
  kms::TokenKeyRequestService& key_requests() { return *key_requests_; }
  kms::TokenBridgeService& bridges() { return *bridges_; }
  RecordingAuditSink& audit() { return audit_; }
  const std::string& dir() const { return token_files_->dir(); }
  const std::string& database_path() const { return database_path_; }

  // Provisions a root key with a known value: created in the token as a transit key,
  // wrapped under the storage key in the token, stored in the database, destroyed.
  void add_subscriber(const std::string& id, const kms::client::Bytes& key);
  void add_bridge(const std::string& id, const kms::client::Bytes& key);
  void revoke(tokens::IdentityKind kind, const std::string& id);
  kms::client::UeClient ue(const std::string& id, const kms::client::Bytes& key) const;
  kms::client::BridgeClient bridge(const std::string& id, const kms::client::Bytes& key) const;

  // Closes and reopens the registry and services (a restart of the server's state).
  void reopen_registry();
  // Rebuilds the services with another audit sink / config.
  void rebuild_services(kms::AuditSink& audit, kms::ServiceConfig config);

 private:
  void add_root_key(tokens::IdentityKind kind, const std::string& id,
                    const kms::client::Bytes& key);
  void build_services();

  TestbedOptions options_;
  std::unique_ptr<testsupport::TestToken> token_files_;
  std::string database_path_;
  std::unique_ptr<tokens::TokenContext> token_;
  std::unique_ptr<tokens::KeyDatabase> database_;
  std::unique_ptr<tokens::KeyStore> store_;
  std::unique_ptr<kms::StoredConferenceRegistry> registry_;
  RecordingAuditSink audit_;
  kms::AuditSink* active_audit_ = nullptr;
  std::unique_ptr<kms::TokenKeyRequestService> key_requests_;
  std::unique_ptr<kms::TokenBridgeService> bridges_;
};

}  // namespace kmstest
