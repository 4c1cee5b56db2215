#include "storage/sqlite.h"

#include <sqlite3.h>

#include "storage/error.h"

namespace storage::sqlite {

Connection::Connection(std::string path, OpenOptions options) : path_(std::move(path)) {
  int flags = SQLITE_OPEN_NOMUTEX;
  flags |= options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (options.create && !options.read_only) flags |= SQLITE_OPEN_CREATE;
  const int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(ErrorKind::unavailable, "database " + path_ + ": cannot open: " + message);
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, options.busy_timeout_ms);
  try {
    if (!options.read_only) {
      if (options.wal) exec("PRAGMA journal_mode=WAL");
      exec(options.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    }
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Connection::~Connection() {
  for (auto& [sql, statement] : statements_) sqlite3_finalize(statement);
  sqlite3_close(db_);
}

void Connection::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    const std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    fail(message);
  }
}

std::int64_t Connection::changes() const { return sqlite3_changes(db_); }

void Connection::on_wal_commit(std::function<void(int wal_pages)> hook) {
  wal_hook_ = std::move(hook);
  if (!wal_hook_) {
    sqlite3_wal_autocheckpoint(db_, 1000);  // SQLite's default threshold again
    return;
  }
  sqlite3_wal_hook(
      db_,
      [](void* self, sqlite3*, const char*, int pages) {
        static_cast<Connection*>(self)->wal_hook_(pages);
        return SQLITE_OK;
      },
      this);
}

void Connection::fail(std::string_view what) const {
  const int code = sqlite3_extended_errcode(db_);
  const std::string message =
      "database " + path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_);
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      throw Error(ErrorKind::busy, message);
    case SQLITE_CONSTRAINT:
      if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE) {
        throw Error(ErrorKind::duplicate, message);
      }
      break;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
      throw Error(ErrorKind::unavailable, message);
    default:
      break;
  }
  throw Error(ErrorKind::other, message);
}

sqlite3_stmt* Connection::cached(const char* sql) {
  if (auto found = statements_.find(std::string_view(sql)); found != statements_.end()) {
    return found->second;
  }
  sqlite3_stmt* statement = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr) !=
      SQLITE_OK) {
    fail(std::string("prepare ") + sql);
  }
  statements_.emplace(sql, statement);
  return statement;
}

Query::Query(Connection& connection, const char* sql)
    : connection_(connection), statement_(connection.cached(sql)) {}

Query::~Query() {
  sqlite3_reset(statement_);
  sqlite3_clear_bindings(statement_);
}

void Query::check(int rc) {
  if (rc != SQLITE_OK) connection_.fail("bind");
}

Query& Query::bind(int index, ByteView blob) {
  if (blob.empty()) return bind_null(index);
  check(sqlite3_bind_blob(statement_, index, blob.data(), static_cast<int>(blob.size()),
                          SQLITE_TRANSIENT));
  return *this;
}

Query& Query::bind(int index, std::string_view text) {
  check(sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()),
                          SQLITE_TRANSIENT));
  return *this;
}

Query& Query::bind(int index, std::int64_t value) {
  check(sqlite3_bind_int64(statement_, index, value));
  return *this;
}

Query& Query::bind_null(int index) {
  check(sqlite3_bind_null(statement_, index));
  return *this;
}

bool Query::step() {
  const int rc = sqlite3_step(statement_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  connection_.fail("step");
}

void Query::run() {
  while (step()) {
  }
}

std::int64_t Query::integer(int column) const { return sqlite3_column_int64(statement_, column); }

bool Query::is_null(int column) const {
  return sqlite3_column_type(statement_, column) == SQLITE_NULL;
}

std::string Query::text(int column) const {
  const auto* data = sqlite3_column_text(statement_, column);
  return data == nullptr
             ? std::string()
             : std::string(reinterpret_cast<const char*>(data),
                           static_cast<std::size_t>(sqlite3_column_bytes(statement_, column)));
}

ByteView Query::blob_view(int column) const {
  const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(statement_, column));
  const int size = sqlite3_column_bytes(statement_, column);
  return data == nullptr ? ByteView() : ByteView(data, static_cast<std::size_t>(size));
}

std::vector<std::uint8_t> Query::blob(int column) const {
  const ByteView view = blob_view(column);
  return std::vector<std::uint8_t>(view.begin(), view.end());
}

Transaction::Transaction(Connection& connection) : connection_(connection) {
  connection_.exec("BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  if (!done_) sqlite3_exec(connection_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  connection_.exec("COMMIT");
  done_ = true;
}

Savepoint::Savepoint(Connection& connection) : connection_(connection) {
  connection_.exec("SAVEPOINT write");
}

Savepoint::~Savepoint() {
  if (!done_) {
    sqlite3_exec(connection_.handle(), "ROLLBACK TO write; RELEASE write", nullptr, nullptr,
                 nullptr);
  }
}

void Savepoint::release() {
  connection_.exec("RELEASE write");
  done_ = true;
}

void Savepoint::rollback() {
  done_ = true;
  connection_.exec("ROLLBACK TO write; RELEASE write");
}

}  // namespace storage::sqlite
