#include "tokens/key_database.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "storage/postgres.h"
#include "storage/sqlite.h"
#include "tokens/unix_time.h"

namespace tokens {
namespace {

constexpr const char* kColumns =
    "kind, identity, status, key_version, mode, wrapped_key, created_at, updated_at";

// Runs `body`, turning storage errors into this layer's: unavailable (the server is gone) as
// DatabaseUnavailableError, a duplicate key as DuplicateIdentityError, the rest DatabaseError.
template <typename Body>
auto translated(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const storage::Error& error) {
    switch (error.kind()) {
      case storage::ErrorKind::unavailable:
        throw DatabaseUnavailableError(error.what());
      case storage::ErrorKind::duplicate:
        throw DuplicateIdentityError(error.what());
      default:
        throw DatabaseError(error.what());
    }
  }
}

IdentityRecord record_from(std::string kind, std::string identity, const std::string& status,
                           std::int64_t version, const std::string& mode, hsm::Bytes wrapped,
                           std::int64_t created, std::int64_t updated) {
  IdentityRecord record;
  record.kind = parse_kind(kind).value_or(IdentityKind::subscriber);
  record.identity = std::move(identity);
  record.status = status == "revoked" ? KeyStatus::revoked : KeyStatus::active;
  record.key_version = static_cast<std::uint32_t>(version);
  record.mode = parse_key_store_mode(mode).value_or(KeyStoreMode::wrapped);
  record.wrapped_key = std::move(wrapped);
  record.created_at = created;
  record.updated_at = updated;
  return record;
}

}  // namespace

// The table's storage. Called with KeyDatabase::mutex_ held, except find() and count() when
// concurrent_reads() and no transaction is open.
class KeyDatabase::Backend {
 public:
  virtual ~Backend() = default;
  virtual bool concurrent_reads() const = 0;
  virtual std::optional<IdentityRecord> find(IdentityKind kind, std::string_view identity,
                                             bool in_transaction) = 0;
  virtual std::vector<IdentityRecord> list(std::optional<IdentityKind> kind) = 0;
  virtual std::size_t count(IdentityKind kind, std::optional<KeyStatus> status,
                            bool in_transaction) = 0;
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  virtual void insert(const IdentityRecord& record, std::int64_t created, std::int64_t updated) = 0;
  virtual bool replace_key(IdentityKind kind, std::string_view identity, std::uint32_t version,
                           KeyStoreMode mode, hsm::ByteView wrapped_key, std::int64_t at) = 0;
  virtual bool set_status(IdentityKind kind, std::string_view identity, KeyStatus status,
                          std::int64_t at) = 0;
};

namespace {

class SqliteBackend final : public KeyDatabase::Backend {
 public:
  explicit SqliteBackend(const std::string& path) : connection_(path) {
    storage::migrate(connection_, storage::key_database_schema(storage::Backend::sqlite));
  }
  bool concurrent_reads() const override { return false; }

  std::optional<IdentityRecord> find(IdentityKind kind, std::string_view identity, bool) override {
    storage::sqlite::Query query(connection_, kFind);
    query.bind(1, kind_name(kind)).bind(2, identity);
    if (!query.step()) return std::nullopt;
    return read(query);
  }

  std::vector<IdentityRecord> list(std::optional<IdentityKind> kind) override {
    storage::sqlite::Query query(connection_, kind ? kListKind : kListAll);
    if (kind) query.bind(1, kind_name(*kind));
    std::vector<IdentityRecord> records;
    while (query.step()) records.push_back(read(query));
    return records;
  }

  std::size_t count(IdentityKind kind, std::optional<KeyStatus> status, bool) override {
    storage::sqlite::Query query(
        connection_, status ? "SELECT count(*) FROM kms_identities WHERE kind = ?1 AND status = ?2"
                            : "SELECT count(*) FROM kms_identities WHERE kind = ?1");
    query.bind(1, kind_name(kind));
    if (status) query.bind(2, status_name(*status));
    query.step();
    return static_cast<std::size_t>(query.integer(0));
  }

  void begin() override { connection_.exec("BEGIN IMMEDIATE"); }
  void commit() override { connection_.exec("COMMIT"); }
  void rollback() noexcept override {
    try {
      connection_.exec("ROLLBACK");
    } catch (...) {  // nothing more to do: the connection rolls back on close
    }
  }

  void insert(const IdentityRecord& record, std::int64_t created, std::int64_t updated) override {
    storage::sqlite::Query query(connection_,
                                 "INSERT INTO kms_identities (kind, identity, status, "
                                 "key_version, mode, wrapped_key, created_at, updated_at) "
                                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    query.bind(1, kind_name(record.kind))
        .bind(2, record.identity)
        .bind(3, status_name(record.status))
        .bind(4, std::int64_t{record.key_version})
        .bind(5, key_store_mode_name(record.mode))
        .bind(6, hsm::ByteView(record.wrapped_key))
        .bind(7, created)
        .bind(8, updated)
        .run();
  }

  bool replace_key(IdentityKind kind, std::string_view identity, std::uint32_t version,
                   KeyStoreMode mode, hsm::ByteView wrapped_key, std::int64_t at) override {
    storage::sqlite::Query query(connection_,
                                 "UPDATE kms_identities SET key_version = ?3, mode = ?4, "
                                 "wrapped_key = ?5, status = 'active', updated_at = ?6 "
                                 "WHERE kind = ?1 AND identity = ?2");
    query.bind(1, kind_name(kind))
        .bind(2, identity)
        .bind(3, std::int64_t{version})
        .bind(4, key_store_mode_name(mode))
        .bind(5, wrapped_key)
        .bind(6, at)
        .run();
    return connection_.changes() == 1;
  }

  bool set_status(IdentityKind kind, std::string_view identity, KeyStatus status,
                  std::int64_t at) override {
    storage::sqlite::Query query(connection_,
                                 "UPDATE kms_identities SET status = ?3, updated_at = ?4 "
                                 "WHERE kind = ?1 AND identity = ?2");
    query.bind(1, kind_name(kind)).bind(2, identity).bind(3, status_name(status)).bind(4, at).run();
    return connection_.changes() == 1;
  }

 private:
  static inline const std::string kFindSql =
      std::string("SELECT ") + kColumns + " FROM kms_identities WHERE kind = ?1 AND identity = ?2";
  static inline const std::string kListKindSql = std::string("SELECT ") + kColumns +
                                                 " FROM kms_identities WHERE kind = ?1 "
                                                 "ORDER BY kind, identity";
  static inline const std::string kListAllSql =
      std::string("SELECT ") + kColumns + " FROM kms_identities ORDER BY kind, identity";
  static inline const char* const kFind = kFindSql.c_str();
  static inline const char* const kListKind = kListKindSql.c_str();
  static inline const char* const kListAll = kListAllSql.c_str();

  static IdentityRecord read(const storage::sqlite::Query& row) {
    return record_from(row.text(0), row.text(1), row.text(2), row.integer(3), row.text(4),
                       row.blob(5), row.integer(6), row.integer(7));
  }
  storage::sqlite::Connection connection_;
};

class PostgresBackend final : public KeyDatabase::Backend {
 public:
  explicit PostgresBackend(const storage::DatabaseUrl& url) : pool_(url) {
    auto lease = pool_.acquire();
    storage::prepare_schema(*lease, storage::key_database_schema(storage::Backend::postgresql),
                            url.migration);
  }
  bool concurrent_reads() const override { return true; }

  std::optional<IdentityRecord> find(IdentityKind kind, std::string_view identity,
                                     bool in_transaction) override {
    return on(in_transaction, [&](storage::pg::Connection& connection) {
      const storage::pg::Result rows =
          connection.query(kFind, storage::pg::Params().add(kind_name(kind)).add(identity));
      return rows.rows() == 0 ? std::nullopt : std::optional(read(rows, 0));
    });
  }

  std::vector<IdentityRecord> list(std::optional<IdentityKind> kind) override {
    return on(transaction_.has_value(), [&](storage::pg::Connection& connection) {
      storage::pg::Params params;
      if (kind) params.add(kind_name(*kind));
      const storage::pg::Result rows = connection.query(kind ? kListKind : kListAll, params);
      std::vector<IdentityRecord> records;
      for (int row = 0; row < rows.rows(); ++row) records.push_back(read(rows, row));
      return records;
    });
  }

  std::size_t count(IdentityKind kind, std::optional<KeyStatus> status,
                    bool in_transaction) override {
    return on(in_transaction, [&](storage::pg::Connection& connection) {
      storage::pg::Params params;
      params.add(kind_name(kind));
      if (status) params.add(status_name(*status));
      const storage::pg::Result rows = connection.query(
          status ? "SELECT count(*) FROM kms_identities WHERE kind = $1 AND status = $2"
                 : "SELECT count(*) FROM kms_identities WHERE kind = $1",
          params);
      return static_cast<std::size_t>(rows.integer(0, 0));
    });
  }

  void begin() override {
    transaction_.emplace(pool_.acquire());
    try {
      (*transaction_)->exec("BEGIN");
    } catch (...) {
      transaction_.reset();
      throw;
    }
  }
  void commit() override {
    try {
      (*transaction_)->exec("COMMIT");
    } catch (...) {
      transaction_.reset();
      throw;
    }
    transaction_.reset();
  }
  void rollback() noexcept override {
    if (!transaction_) return;
    try {
      if (!(*transaction_)->broken()) (*transaction_)->exec("ROLLBACK");
    } catch (...) {  // the connection is then broken and the pool drops it
    }
    transaction_.reset();
  }

  void insert(const IdentityRecord& record, std::int64_t created, std::int64_t updated) override {
    on(transaction_.has_value(), [&](storage::pg::Connection& connection) {
      connection.query(
          "INSERT INTO kms_identities (kind, identity, status, key_version, mode, wrapped_key, "
          "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
          storage::pg::Params()
              .add(kind_name(record.kind))
              .add(record.identity)
              .add(status_name(record.status))
              .add(std::int64_t{record.key_version})
              .add(key_store_mode_name(record.mode))
              .add(hsm::ByteView(record.wrapped_key))  // empty in token mode
              .add(created)
              .add(updated));
      return 0;
    });
  }

  bool replace_key(IdentityKind kind, std::string_view identity, std::uint32_t version,
                   KeyStoreMode mode, hsm::ByteView wrapped_key, std::int64_t at) override {
    return on(transaction_.has_value(), [&](storage::pg::Connection& connection) {
      storage::pg::Params params;
      params.add(kind_name(kind))
          .add(identity)
          .add(std::int64_t{version})
          .add(key_store_mode_name(mode))
          .add(wrapped_key)
          .add(at);
      return connection
                 .query(
                     "UPDATE kms_identities SET key_version = $3, mode = $4, "
                     "wrapped_key = $5, status = 'active', updated_at = $6 "
                     "WHERE kind = $1 AND identity = $2",
                     params)
                 .affected() == 1;
    });
  }

  bool set_status(IdentityKind kind, std::string_view identity, KeyStatus status,
                  std::int64_t at) override {
    return on(transaction_.has_value(), [&](storage::pg::Connection& connection) {
      return connection
                 .query(
                     "UPDATE kms_identities SET status = $3, updated_at = $4 "
                     "WHERE kind = $1 AND identity = $2",
                     storage::pg::Params()
                         .add(kind_name(kind))
                         .add(identity)
                         .add(status_name(status))
                         .add(at))
                 .affected() == 1;
    });
  }

 private:
  static inline const std::string kFindSql =
      std::string("SELECT ") + kColumns + " FROM kms_identities WHERE kind = $1 AND identity = $2";
  static inline const std::string kListKindSql = std::string("SELECT ") + kColumns +
                                                 " FROM kms_identities WHERE kind = $1 "
                                                 "ORDER BY kind, identity";
  static inline const std::string kListAllSql =
      std::string("SELECT ") + kColumns + " FROM kms_identities ORDER BY kind, identity";
  static inline const char* const kFind = kFindSql.c_str();
  static inline const char* const kListKind = kListKindSql.c_str();
  static inline const char* const kListAll = kListAllSql.c_str();

  static IdentityRecord read(const storage::pg::Result& rows, int row) {
    return record_from(rows.text(row, 0), rows.text(row, 1), rows.text(row, 2),
                       rows.integer(row, 3), rows.text(row, 4),
                       rows.is_null(row, 5) ? hsm::Bytes() : rows.bytes(row, 5),
                       rows.integer(row, 6), rows.integer(row, 7));
  }

  // Runs `body` on a pooled connection, or inside the open transaction under a savepoint:
  // a failed statement then undoes only itself, as on SQLite (PostgreSQL would otherwise
  // refuse the rest of the transaction).
  template <typename Body>
  auto on(bool in_transaction, Body&& body)
      -> decltype(body(std::declval<storage::pg::Connection&>())) {
    if (in_transaction && transaction_) {
      storage::pg::Savepoint savepoint(**transaction_);
      auto result = body(**transaction_);
      savepoint.release();
      return result;
    }
    storage::pg::Pool::Lease lease = pool_.acquire();
    return body(*lease);
  }

  storage::pg::Pool pool_;
  std::optional<storage::pg::Pool::Lease> transaction_;  // guarded by KeyDatabase::mutex_
};

}  // namespace

std::string_view status_name(KeyStatus status) {
  return status == KeyStatus::revoked ? "revoked" : "active";
}

std::vector<std::string> prepare_database_file(const std::string& path) {
  std::vector<std::string> warnings;
  if (path.empty() || path.front() == ':' || path.starts_with("file:")) return warnings;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    // New: exactly 0600 (the umask may have taken bits away, never added them; fchmod makes
    // the mode independent of it either way).
    ::fchmod(fd, 0600);
    ::close(fd);
    return warnings;
  }
  if (errno != EEXIST) return warnings;  // e.g. no such folder: SQLite reports it
  for (const std::string& file : {path, path + "-wal", path + "-shm"}) {
    struct stat info {};
    if (::stat(file.c_str(), &info) != 0 || (info.st_mode & 077) == 0) continue;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
    warnings.push_back("database file " + file + " has mode " + mode +
                       ": group or others may read or write it (wrapped root keys, conference "
                       "nonces); chmod 600 " +
                       file);
  }
  return warnings;
}

KeyDatabase::KeyDatabase(const std::string& database) {
  const storage::DatabaseUrl url =
      translated([&] { return storage::DatabaseUrl::parse(database); });
  path_ = url.backend == storage::Backend::sqlite ? url.sqlite_path : url.display();
  if (url.backend == storage::Backend::sqlite) {
    warnings_ = prepare_database_file(url.sqlite_path);
    backend_ = translated([&] { return std::make_unique<SqliteBackend>(url.sqlite_path); });
  } else {
    backend_ = translated([&] { return std::make_unique<PostgresBackend>(url); });
  }
}

KeyDatabase::~KeyDatabase() = default;

std::optional<IdentityRecord> KeyDatabase::find(IdentityKind kind,
                                                std::string_view identity) const {
  if (backend_->concurrent_reads() && !in_transaction_) {  // the request path: no lock
    return translated([&] { return backend_->find(kind, identity, false); });
  }
  std::lock_guard lock(mutex_);
  return translated([&] { return backend_->find(kind, identity, in_transaction_); });
}

std::vector<IdentityRecord> KeyDatabase::list(std::optional<IdentityKind> kind) const {
  std::lock_guard lock(mutex_);
  return translated([&] { return backend_->list(kind); });
}

std::size_t KeyDatabase::count(IdentityKind kind, std::optional<KeyStatus> status) const {
  std::lock_guard lock(mutex_);
  return translated([&] { return backend_->count(kind, status, in_transaction_); });
}

KeyDatabase::Transaction::Transaction(KeyDatabase& database)
    : database_(database), lock_(database.mutex_) {
  translated([&] {
    database_.backend_->begin();
    return 0;
  });
  database_.in_transaction_ = true;
}

KeyDatabase::Transaction::~Transaction() {
  if (!done_) database_.backend_->rollback();
  database_.in_transaction_ = false;
}

void KeyDatabase::Transaction::commit() {
  translated([&] {
    database_.backend_->commit();
    return 0;
  });
  done_ = true;
}

void KeyDatabase::insert(const IdentityRecord& record) {
  std::lock_guard lock(mutex_);
  const std::int64_t created = record.created_at ? record.created_at : unix_now();
  const std::int64_t updated = record.updated_at ? record.updated_at : created;
  try {
    translated([&] {
      backend_->insert(record, created, updated);
      return 0;
    });
  } catch (const DuplicateIdentityError&) {
    throw DuplicateIdentityError(std::string(kind_name(record.kind)) + " " + record.identity +
                                 " already exists");
  }
}

bool KeyDatabase::replace_key(IdentityKind kind, std::string_view identity,
                              std::uint32_t new_version, KeyStoreMode mode,
                              hsm::ByteView wrapped_key) {
  std::lock_guard lock(mutex_);
  return translated(
      [&] { return backend_->replace_key(kind, identity, new_version, mode, wrapped_key, unix_now()); });
}

bool KeyDatabase::set_status(IdentityKind kind, std::string_view identity, KeyStatus status) {
  std::lock_guard lock(mutex_);
  return translated([&] { return backend_->set_status(kind, identity, status, unix_now()); });
}

}  // namespace tokens
