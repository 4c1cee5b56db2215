// Small RAII helpers over the SQLite C API for the registry (private to kms_core).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "hsm/secure_bytes.h"
#include "kms/errors.h"

namespace kms::sqlite {

[[noreturn]] inline void fail(sqlite3* db, std::string_view what) {
  const int code = sqlite3_errcode(db) & 0xff;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) {  // another writer held it past the timeout
    throw ProtocolError(ErrorCode::overloaded, "registry database busy: " + std::string(what));
  }
  throw ProtocolError(ErrorCode::internal_error,
                      "registry database: " + std::string(what) + ": " + sqlite3_errmsg(db));
}

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK) fail(db, sql);
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, hsm::ByteView blob) {
    check(sqlite3_bind_blob(statement_, index, blob.data(), static_cast<int>(blob.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int index, std::string_view text) {
    check(sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    check(sqlite3_bind_int64(statement_, index, value));
    return *this;
  }
  Statement& bind_null(int index) {
    check(sqlite3_bind_null(statement_, index));
    return *this;
  }

  // true: a row is available; false: done.
  bool step() {
    const int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, "step");
  }
  void run() {
    while (step()) {
    }
  }

  std::int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }
  bool is_null(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }
  std::string text(int column) const {
    const auto* data = sqlite3_column_text(statement_, column);
    return data == nullptr
               ? std::string()
               : std::string(reinterpret_cast<const char*>(data),
                             static_cast<std::size_t>(sqlite3_column_bytes(statement_, column)));
  }
  hsm::Bytes blob(int column) const {
    const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(statement_, column));
    const int size = sqlite3_column_bytes(statement_, column);
    return data == nullptr ? hsm::Bytes() : hsm::Bytes(data, data + size);
  }
  hsm::SecureBytes secure_blob(int column) const {
    const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(statement_, column));
    const int size = sqlite3_column_bytes(statement_, column);
    return hsm::SecureBytes(hsm::ByteView(data, static_cast<std::size_t>(size)));
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(db_, "bind");
  }
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

// BEGIN IMMEDIATE .. COMMIT; rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      fail(db_, "BEGIN IMMEDIATE");
    }
  }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) fail(db_, "COMMIT");
    done_ = true;
  }

 private:
  sqlite3* db_;
  bool done_ = false;
};

// SAVEPOINT inside an open transaction: release() keeps its changes, rollback() undoes
// just them; the destructor undoes them (best effort) unless released or rolled back.
class Savepoint {
 public:
  explicit Savepoint(sqlite3* db) : db_(db) {
    if (sqlite3_exec(db_, "SAVEPOINT write", nullptr, nullptr, nullptr) != SQLITE_OK) {
      fail(db_, "SAVEPOINT");
    }
  }
  ~Savepoint() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK TO write; RELEASE write", nullptr, nullptr, nullptr);
  }
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;
  void release() {
    if (sqlite3_exec(db_, "RELEASE write", nullptr, nullptr, nullptr) != SQLITE_OK) {
      fail(db_, "RELEASE");
    }
    done_ = true;
  }
  // Throws if the changes can't be undone (the transaction is then no longer usable).
  void rollback() {
    done_ = true;
    if (sqlite3_exec(db_, "ROLLBACK TO write; RELEASE write", nullptr, nullptr, nullptr) !=
        SQLITE_OK) {
      fail(db_, "ROLLBACK TO");
    }
  }

 private:
  sqlite3* db_;
  bool done_ = false;
};

}  // namespace kms::sqlite
