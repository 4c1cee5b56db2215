// What kms-provision does to the token and the database. Every operation leaves both
// unchanged when it fails: created objects sit in hsm::ObjectGuards until the database
// transaction commits.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bulk_file.h"
#include "hsm/secure_bytes.h"
#include "tokens/key_database.h"
#include "tokens/token_context.h"

namespace provisioning {

struct InitOptions {
  bool force = false;
  // Ceremony-supplied AES-256 transport key: 32 raw bytes, or 64 hex digits / base64 text.
  std::optional<std::string> transport_key_file;
};

struct InitResult {
  std::vector<std::string> created;   // labels
  std::vector<std::string> present;   // already there, checked, left alone
  std::vector<std::string> replaced;  // --force
  bool transport_key_imported = false;
  std::string note;
};

// How a newly generated root key leaves the token for the UE or bridge.
struct ExportOptions {
  std::optional<std::string> personalisation_key;  // name of a personalisation key
  bool insecure_plaintext = false;
  std::string out_path;  // "-" for stdout
};

struct ImportResult {
  std::size_t imported = 0;
  std::size_t skipped = 0;  // already in the database (skip_existing)
  std::vector<BulkProblem> failed;
  std::string unit = "line";
  // The number (line or entry) of the last entry of the last committed chunk: every entry
  // up to it is imported, skipped or failed; none after it is imported. 0: none committed.
  std::size_t committed_through = 0;
  // Instances of the token's library that did the token work (bulk import: more than one
  // on a token with the quirk serialises_token_object_use).
  std::size_t token_instances = 1;
  std::vector<std::string> warnings;  // one sentence each, for stderr
};

struct BulkImportSettings {
  std::size_t batch_size = 500;  // entries per chunk (one database transaction)
  std::size_t threads = 2;       // wrapped mode: sessions working in parallel (<= the pool's)
  // An identity already in the database is skipped (counted) rather than failed: for
  // running a file again after an import that stopped part way.
  bool skip_existing = false;
  // After each commit, with the totals so far.
  std::function<void(const ImportResult&)> on_commit;
};

struct KeyCheck {  // attributes of a key object, for init's idempotent check and tests
  std::string label;
  bool sensitive = false;
  bool extractable = false;
  bool encrypt = false, decrypt = false, derive = false, wrap = false, unwrap = false;
  // CKA_MODIFIABLE: TRUE only for keys created before the key-custody change (shown by
  // status; init accepts them, --force replaces them).
  bool modifiable = false;
};

class Provisioner {
 public:
  // Either may be null: init needs no database, show needs no token, revoke needs the
  // token only for token-mode records (it is opened on demand by `open_token`).
  Provisioner(std::function<tokens::TokenContext&()> open_token, tokens::KeyDatabase* database,
              tokens::KeyStoreMode mode);

  InitResult init(const InitOptions& options);
  std::vector<KeyCheck> kms_keys();

  void import_personalisation_key(const std::string& name, hsm::ByteView wrapped);
  std::vector<std::string> personalisation_keys();

  // Generates the root key in the token, stores it, and writes the export to out_path.
  void add_generated(tokens::IdentityKind kind, const std::string& identity,
                     const ExportOptions& export_options);
  // Imports a root key wrapped under the transport key.
  void import_wrapped(tokens::IdentityKind kind, const std::string& identity,
                      hsm::ByteView wrapped);
  ImportResult import_bulk(tokens::IdentityKind kind, const BulkFile& file,
                           const BulkImportSettings& settings);
  // New key version: generated (export as for add) or imported (wrapped != nullopt).
  std::uint32_t rotate(tokens::IdentityKind kind, const std::string& identity,
                       const ExportOptions& export_options,
                       const std::optional<hsm::Bytes>& wrapped);
  void revoke(tokens::IdentityKind kind, const std::string& identity);

  tokens::IdentityRecord show(tokens::IdentityKind kind, const std::string& identity);

 private:
  tokens::KeyDatabase& database();
  tokens::TokenContext& token();
  std::function<tokens::TokenContext&()> open_token_;
  tokens::KeyDatabase* database_;
  tokens::KeyStoreMode mode_;
};

// Throws InvalidIdentityError naming the problem.
void require_ims_identity(const std::string& identity);

}  // namespace provisioning
