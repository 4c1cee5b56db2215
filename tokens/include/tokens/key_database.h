// The KMS database's table of subscribers and bridges (embedded SQLite, WAL): identity,
// kind, status, key version, storage mode, the root key wrapped (RFC 5649) under the token's
// storage key (wrapped mode), timestamps. Never plaintext key material.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "hsm/secure_bytes.h"
#include "tokens/identity.h"
#include "tokens/token_config.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tokens {

enum class KeyStatus { active, revoked };
std::string_view status_name(KeyStatus status);  // "active" / "revoked"

struct IdentityRecord {
  std::string identity;
  IdentityKind kind = IdentityKind::subscriber;
  KeyStatus status = KeyStatus::active;
  std::uint32_t key_version = 1;
  KeyStoreMode mode = KeyStoreMode::wrapped;
  hsm::Bytes wrapped_key;       // wrapped mode: RFC 5649 under the storage key; token mode: empty
  std::int64_t created_at = 0;  // Unix seconds
  std::int64_t updated_at = 0;
};

class DatabaseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// insert() of an identity that already exists (of the same kind).
class DuplicateIdentityError : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
};

// The database holds wrapped root keys and the nonces of live conferences: only the KMS
// user may read it. Before SQLite opens `path`: a file that does not exist is created with
// mode 0600 whatever the umask (SQLite gives its -wal and -shm files the database's mode);
// for an existing file, and existing -wal / -shm files, the result names each one that
// group or others may read or write, with its mode (empty: all private). Special names
// (":memory:", "file:" URIs) are left to SQLite.
std::vector<std::string> prepare_database_file(const std::string& path);

// Thread-safe (one connection, serialised by a mutex; lookups are index lookups).
class KeyDatabase {
 public:
  // Opens (creates) the file, sets WAL and busy_timeout, creates the schema.
  explicit KeyDatabase(const std::string& path);
  ~KeyDatabase();
  KeyDatabase(const KeyDatabase&) = delete;
  KeyDatabase& operator=(const KeyDatabase&) = delete;

  const std::string& path() const noexcept { return path_; }
  // prepare_database_file's findings when this opened: warnings for the program's log.
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

  std::optional<IdentityRecord> find(IdentityKind kind, std::string_view identity) const;
  std::vector<IdentityRecord> list(std::optional<IdentityKind> kind = std::nullopt) const;
  std::size_t count(IdentityKind kind, std::optional<KeyStatus> status = std::nullopt) const;

  // Writes run inside a transaction: begin() .. commit(); a Transaction destroyed without
  // commit() rolls back. Writes outside a transaction are each their own transaction.
  class Transaction {
   public:
    explicit Transaction(KeyDatabase& database);
    ~Transaction();  // rolls back unless committed
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit();

   private:
    KeyDatabase& database_;
    std::unique_lock<std::recursive_mutex> lock_;
    bool done_ = false;
  };

  // Throws DuplicateIdentityError if (kind, identity) exists. Timestamps default to now.
  void insert(const IdentityRecord& record);
  // Rotation: new version, mode and wrapped key; status back to active. False: unknown.
  bool replace_key(IdentityKind kind, std::string_view identity, std::uint32_t new_version,
                   KeyStoreMode mode, hsm::ByteView wrapped_key);
  // False: unknown identity.
  bool set_status(IdentityKind kind, std::string_view identity, KeyStatus status);

 private:
  friend class Transaction;
  void exec(const char* sql) const;
  std::string path_;
  std::vector<std::string> warnings_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* find_statement_ = nullptr;  // prepared once: find() is on the request path
  mutable std::recursive_mutex mutex_;
};

}  // namespace tokens
