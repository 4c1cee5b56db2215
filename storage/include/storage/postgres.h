// PostgreSQL on libpq: a connection whose statements are prepared once (named by their SQL
// text's first use) and run with typed parameters and binary results, transactions and
// savepoints, and a pool of connections that replaces broken ones on the next acquire (a
// server restart costs the requests in flight, never the process). Errors are
// storage::Error, classified from the SQLSTATE: unavailable (the server is unreachable,
// refused the login, or shut down), conflict (serialization failure, deadlock), duplicate
// (unique violation), schema (an undefined table or column), other.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/database_url.h"

struct pg_conn;
struct pg_result;

namespace storage::pg {

using ByteView = std::span<const std::uint8_t>;

// Parameters $1, $2, ... of one statement, in order.
class Params {
 public:
  Params& add(std::int64_t value);     // int8
  Params& add(std::string_view text);  // text
  Params& add(ByteView bytes);         // bytea
  Params& add_null_text();

 private:
  friend class Connection;
  std::vector<std::string> values_;
  std::vector<bool> null_;
  std::vector<unsigned> types_;
  std::vector<int> formats_;
};

class Result {
 public:
  explicit Result(pg_result* result) : result_(result) {}
  ~Result();
  Result(Result&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  Result& operator=(Result&&) = delete;
  Result(const Result&) = delete;

  int rows() const;
  bool is_null(int row, int column) const;
  std::int64_t integer(int row, int column) const;  // int2/int4/int8 columns
  std::string text(int row, int column) const;
  std::vector<std::uint8_t> bytes(int row, int column) const;
  ByteView bytes_view(int row, int column) const;
  std::int64_t affected() const;  // rows an INSERT/UPDATE/DELETE changed

 private:
  pg_result* result_;
};

class Connection {
 public:
  // Throws Error(unavailable) with libpq's reason (server unreachable, login refused).
  Connection(const std::string& conninfo, const std::string& password, std::string display);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Statements without parameters or results (DDL, BEGIN, COMMIT); several allowed.
  void exec(const char* sql);
  // A prepared statement (prepared on this connection on first use).
  Result query(const char* sql, const Params& params = {});
  // The connection is gone (the server restarted or went away): the pool replaces it.
  bool broken() const;
  const std::string& display() const noexcept { return display_; }

 private:
  [[noreturn]] void fail(std::string_view what, pg_result* result);
  pg_conn* conn_ = nullptr;
  std::string display_;
  std::map<std::string, std::string, std::less<>> prepared_;  // SQL -> statement name
};

// BEGIN .. COMMIT; rolls back unless committed (if the connection still works).
class Transaction {
 public:
  explicit Transaction(Connection& connection, const char* begin = "BEGIN");
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Connection& connection_;
  bool done_ = false;
};

// As storage::sqlite::Savepoint. After an error inside it, rollback() makes the transaction
// usable again (PostgreSQL refuses every statement of a failed transaction until then).
class Savepoint {
 public:
  explicit Savepoint(Connection& connection);
  ~Savepoint();
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;
  void release();
  void rollback();

 private:
  Connection& connection_;
  bool done_ = false;
};

// A connection to the database `url` names: the password read from the URL's file or the
// environment (read_database_password) and wiped once libpq has it, or has failed.
std::unique_ptr<Connection> connect(const DatabaseUrl& url);

class Pool {
 public:
  // Opens one connection at once (so a bad URL, an unreachable server or a wrong password
  // fail here, clearly); the others when needed, up to url.pool_size.
  explicit Pool(const DatabaseUrl& url,
                std::chrono::milliseconds acquire_timeout = std::chrono::seconds(10));
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> connection)
        : pool_(&pool), connection_(std::move(connection)) {}
    ~Lease();
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Connection& operator*() { return *connection_; }
    Connection* operator->() { return connection_.get(); }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> connection_;
  };

  // A working connection: an idle one, a new one while below the pool size, else waits.
  // Throws Error(unavailable) when the server can't be reached, Error(busy) after the
  // acquire timeout.
  Lease acquire();
  const std::string& display() const noexcept { return display_; }

 private:
  void give_back(std::unique_ptr<Connection> connection);
  std::unique_ptr<Connection> connect();
  std::string conninfo_;
  std::string password_;
  std::string display_;
  std::size_t size_;
  std::chrono::milliseconds acquire_timeout_;
  std::mutex mutex_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;  // idle + leased
};

}  // namespace storage::pg
