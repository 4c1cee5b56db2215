// The KMS database's table of subscribers and bridges: identity, kind, status, key version,
// storage mode, the root key wrapped (RFC 5649) under the token's storage key (wrapped
// mode), timestamps. Never plaintext key material. On SQLite (a file, WAL) or PostgreSQL
// (shared by every node: a revocation made on one is seen by all at their next lookup),
// chosen by the database URL (storage/database_url.h).
#pragma once

#include <atomic>
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
// The database server can't be reached or went away (PostgreSQL): worth retrying later.
class DatabaseUnavailableError : public DatabaseError {
 public:
  using DatabaseError::DatabaseError;
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

// Thread-safe. SQLite: one connection, serialised by a mutex. PostgreSQL: a connection pool;
// lookups outside a transaction run concurrently; a transaction holds one connection.
class KeyDatabase {
 public:
  // `database`: a database URL (sqlite:PATH, postgresql://...) or a plain SQLite path.
  // SQLite: opens (creates, 0600) the file, sets WAL and busy_timeout. Creates or upgrades
  // the schema (PostgreSQL: unless migrate=check). Throws DatabaseError (a bad URL, a
  // schema newer than this build or, with migrate=check, older), DatabaseUnavailableError
  // (the server can't be reached or refused the login).
  explicit KeyDatabase(const std::string& database);
  ~KeyDatabase();
  KeyDatabase(const KeyDatabase&) = delete;
  KeyDatabase& operator=(const KeyDatabase&) = delete;

  // What it was opened with (an SQLite path or a URL without password parameters).
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

  class Backend;  // SQLite or PostgreSQL (key_database.cpp)

 private:
  friend class Transaction;
  std::string path_;
  std::vector<std::string> warnings_;
  std::unique_ptr<Backend> backend_;
  mutable std::recursive_mutex mutex_;  // writes and transactions; every SQLite call
  std::atomic<bool> in_transaction_{false};
};

}  // namespace tokens
