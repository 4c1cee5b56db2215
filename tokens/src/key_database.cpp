#include "tokens/key_database.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>

#include "tokens/unix_time.h"

namespace tokens {
namespace {

constexpr int kBusyTimeoutMs = 5000;

const char* const kSchema = R"sql(
CREATE TABLE IF NOT EXISTS kms_identities (
  kind        TEXT    NOT NULL CHECK (kind IN ('subscriber', 'bridge')),
  identity    TEXT    NOT NULL,
  status      TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  key_version INTEGER NOT NULL CHECK (key_version >= 1),
  mode        TEXT    NOT NULL CHECK (mode IN ('wrapped', 'token')),
  wrapped_key BLOB,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (kind, identity)
) WITHOUT ROWID;
)sql";

// A prepared statement, finalised on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql, const std::string& path) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) fail("prepare");
  }
  // A statement prepared once and kept (the request path's lookup): reset, not finalised.
  Statement(sqlite3* db, sqlite3_stmt* prepared, const std::string& path)
      : db_(db), stmt_(prepared), path_(path), owned_(false) {}
  ~Statement() {
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& text(int index, std::string_view value) {
    check(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  Statement& integer(int index, std::int64_t value) {
    check(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  Statement& blob(int index, hsm::ByteView value) {
    if (value.empty()) {
      check(sqlite3_bind_null(stmt_, index));
    } else {
      check(sqlite3_bind_blob(stmt_, index, value.data(), static_cast<int>(value.size()),
                              SQLITE_TRANSIENT));
    }
    return *this;
  }
  // True while a row is available.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT) {
      throw DuplicateIdentityError("already exists");
    }
    fail("step");
  }
  std::string column_text(int index) const {
    const auto* text = sqlite3_column_text(stmt_, index);
    return text ? std::string(reinterpret_cast<const char*>(text)) : std::string();
  }
  std::int64_t column_integer(int index) const { return sqlite3_column_int64(stmt_, index); }
  hsm::Bytes column_blob(int index) const {
    const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, index));
    return data ? hsm::Bytes(data, data + sqlite3_column_bytes(stmt_, index)) : hsm::Bytes();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail("bind");
  }
  [[noreturn]] void fail(const char* what) const {
    throw DatabaseError("database " + path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  const std::string& path_;
  bool owned_ = true;
};

IdentityRecord read_record(const Statement& row) {
  IdentityRecord record;
  record.kind = parse_kind(row.column_text(0)).value_or(IdentityKind::subscriber);
  record.identity = row.column_text(1);
  record.status = row.column_text(2) == "revoked" ? KeyStatus::revoked : KeyStatus::active;
  record.key_version = static_cast<std::uint32_t>(row.column_integer(3));
  record.mode = parse_key_store_mode(row.column_text(4)).value_or(KeyStoreMode::wrapped);
  record.wrapped_key = row.column_blob(5);
  record.created_at = row.column_integer(6);
  record.updated_at = row.column_integer(7);
  return record;
}

constexpr const char* kColumns =
    "kind, identity, status, key_version, mode, wrapped_key, created_at, updated_at";

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

KeyDatabase::KeyDatabase(const std::string& path)
    : path_(path), warnings_(prepare_database_file(path)) {
  const int rc =
      sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    throw DatabaseError("database " + path + ": cannot open: " + message);
  }
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db_, 1);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec(kSchema);
    const std::string find_sql = std::string("SELECT ") + kColumns +
                                 " FROM kms_identities WHERE kind = ?1 AND identity = ?2";
    if (sqlite3_prepare_v3(db_, find_sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &find_statement_,
                           nullptr) != SQLITE_OK) {
      throw DatabaseError("database " + path + ": prepare: " + sqlite3_errmsg(db_));
    }
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

KeyDatabase::~KeyDatabase() {
  sqlite3_finalize(find_statement_);
  sqlite3_close(db_);
}

void KeyDatabase::exec(const char* sql) const {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    const std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    throw DatabaseError("database " + path_ + ": " + message);
  }
}

std::optional<IdentityRecord> KeyDatabase::find(IdentityKind kind,
                                                std::string_view identity) const {
  std::lock_guard lock(mutex_);
  Statement statement(db_, find_statement_, path_);
  statement.text(1, kind_name(kind)).text(2, identity);
  if (!statement.step()) return std::nullopt;
  return read_record(statement);
}

std::vector<IdentityRecord> KeyDatabase::list(std::optional<IdentityKind> kind) const {
  std::lock_guard lock(mutex_);
  const std::string sql = std::string("SELECT ") + kColumns + " FROM kms_identities" +
                          (kind ? " WHERE kind = ?1" : "") + " ORDER BY kind, identity";
  Statement statement(db_, sql.c_str(), path_);
  if (kind) statement.text(1, kind_name(*kind));
  std::vector<IdentityRecord> records;
  while (statement.step()) records.push_back(read_record(statement));
  return records;
}

std::size_t KeyDatabase::count(IdentityKind kind, std::optional<KeyStatus> status) const {
  std::lock_guard lock(mutex_);
  Statement statement(db_,
                      status ? "SELECT count(*) FROM kms_identities WHERE kind = ?1 AND "
                               "status = ?2"
                             : "SELECT count(*) FROM kms_identities WHERE kind = ?1",
                      path_);
  statement.text(1, kind_name(kind));
  if (status) statement.text(2, status_name(*status));
  statement.step();
  return static_cast<std::size_t>(statement.column_integer(0));
}

KeyDatabase::Transaction::Transaction(KeyDatabase& database)
    : database_(database), lock_(database.mutex_) {
  database_.exec("BEGIN IMMEDIATE");
}

KeyDatabase::Transaction::~Transaction() {
  if (!done_) {
    try {
      database_.exec("ROLLBACK");
    } catch (...) {  // nothing more to do: the connection rolls back on close
    }
  }
}

void KeyDatabase::Transaction::commit() {
  database_.exec("COMMIT");
  done_ = true;
}

void KeyDatabase::insert(const IdentityRecord& record) {
  std::lock_guard lock(mutex_);
  const std::int64_t created = record.created_at ? record.created_at : unix_now();
  const std::int64_t updated = record.updated_at ? record.updated_at : created;
  Statement statement(db_,
                      "INSERT INTO kms_identities (kind, identity, status, key_version, mode, "
                      "wrapped_key, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                      "?7, ?8)",
                      path_);
  statement.text(1, kind_name(record.kind))
      .text(2, record.identity)
      .text(3, status_name(record.status))
      .integer(4, record.key_version)
      .text(5, key_store_mode_name(record.mode))
      .blob(6, record.wrapped_key)
      .integer(7, created)
      .integer(8, updated);
  try {
    statement.step();
  } catch (const DuplicateIdentityError&) {
    throw DuplicateIdentityError(std::string(kind_name(record.kind)) + " " + record.identity +
                                 " already exists");
  }
}

bool KeyDatabase::replace_key(IdentityKind kind, std::string_view identity,
                              std::uint32_t new_version, KeyStoreMode mode,
                              hsm::ByteView wrapped_key) {
  std::lock_guard lock(mutex_);
  Statement statement(db_,
                      "UPDATE kms_identities SET key_version = ?3, mode = ?4, wrapped_key = ?5, "
                      "status = 'active', updated_at = ?6 WHERE kind = ?1 AND identity = ?2",
                      path_);
  statement.text(1, kind_name(kind))
      .text(2, identity)
      .integer(3, new_version)
      .text(4, key_store_mode_name(mode))
      .blob(5, wrapped_key)
      .integer(6, unix_now());
  statement.step();
  return sqlite3_changes(db_) == 1;
}

bool KeyDatabase::set_status(IdentityKind kind, std::string_view identity, KeyStatus status) {
  std::lock_guard lock(mutex_);
  Statement statement(db_,
                      "UPDATE kms_identities SET status = ?3, updated_at = ?4 WHERE kind = ?1 "
                      "AND identity = ?2",
                      path_);
  statement.text(1, kind_name(kind))
      .text(2, identity)
      .text(3, status_name(status))
      .integer(4, unix_now());
  statement.step();
  return sqlite3_changes(db_) == 1;
}

}  // namespace tokens
