// The one SQLite wrapper of the project: a connection with a statement cache (each SQL text
// prepared once, reset after use), typed binds and columns, transactions and savepoints.
// Not thread-safe: callers serialise use of a Connection.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace storage::sqlite {

using ByteView = std::span<const std::uint8_t>;

struct OpenOptions {
  bool read_only = false;
  bool create = true;
  int busy_timeout_ms = 5000;
  bool wal = true;         // journal_mode=WAL (ignored read-only)
  bool sync_full = false;  // synchronous=FULL rather than NORMAL
};

class Connection {
 public:
  // Throws storage::Error(unavailable) naming the file when it can't be opened.
  explicit Connection(std::string path, OpenOptions options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& path() const noexcept { return path_; }
  sqlite3* handle() noexcept { return db_; }
  // Runs one or more statements without results.
  void exec(const char* sql);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  std::int64_t changes() const;
  // Throws storage::Error classified from the connection's last error code.
  [[noreturn]] void fail(std::string_view what) const;
  // Called after each commit with the pages the WAL then holds. Installing it turns SQLite's
  // automatic checkpoint off for this connection (the COMMIT that crosses 1,000 pages would
  // copy them into the database file and fsync it, on the committing thread): a
  // WalCheckpointer does that work instead. An empty function removes the hook.
  void on_wal_commit(std::function<void(int wal_pages)> hook);

 private:
  friend class Query;
  sqlite3_stmt* cached(const char* sql);
  std::string path_;
  sqlite3* db_ = nullptr;
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;
  std::function<void(int)> wal_hook_;
};

// One use of a cached statement: bind, step, read columns; reset at scope exit.
class Query {
 public:
  Query(Connection& connection, const char* sql);
  ~Query();
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& bind(int index, ByteView blob);  // an empty blob binds NULL
  Query& bind(int index, std::string_view text);
  Query& bind(int index, std::int64_t value);
  Query& bind_null(int index);

  bool step();  // true: a row is available; false: done
  void run();   // steps to the end

  std::int64_t integer(int column) const;
  bool is_null(int column) const;
  std::string text(int column) const;
  std::vector<std::uint8_t> blob(int column) const;
  ByteView blob_view(int column) const;  // valid until the next step

 private:
  void check(int rc);
  Connection& connection_;
  sqlite3_stmt* statement_;
};

// BEGIN IMMEDIATE (the write lock at once) .. COMMIT; rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& connection);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Connection& connection_;
  bool done_ = false;
};

// SAVEPOINT inside an open transaction: release() keeps its changes, rollback() undoes just
// them; the destructor undoes them (best effort) unless released or rolled back.
class Savepoint {
 public:
  explicit Savepoint(Connection& connection);
  ~Savepoint();
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;
  void release();
  void rollback();  // throws if the changes can't be undone

 private:
  Connection& connection_;
  bool done_ = false;
};

}  // namespace storage::sqlite
