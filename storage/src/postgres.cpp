#include "storage/postgres.h"

#include <arpa/inet.h>
#include <libpq-fe.h>

#include <cstring>

#include "storage/error.h"

namespace storage::pg {
namespace {

constexpr unsigned kInt8Oid = 20;
constexpr unsigned kTextOid = 25;
constexpr unsigned kByteaOid = 17;

void wipe(std::string& secret) {
  if (!secret.empty()) explicit_bzero(secret.data(), secret.size());
  secret.clear();
}

std::string trimmed(const char* message) {
  std::string text = message ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// The SQLSTATE classes that mean the server is not there for us (docs: Appendix A).
bool unavailable_state(std::string_view state) {
  return state.starts_with("08") ||  // connection exception
         state == "57P01" ||         // admin_shutdown
         state == "57P02" ||         // crash_shutdown
         state == "57P03" ||         // cannot_connect_now (starting up, shutting down)
         state == "53300";           // too_many_connections
}

}  // namespace

Params& Params::add(std::int64_t value) {
  const std::uint64_t bits = static_cast<std::uint64_t>(value);
  std::string big_endian(8, '\0');
  for (int i = 0; i < 8; ++i) big_endian[i] = static_cast<char>(bits >> (56 - 8 * i));
  values_.push_back(std::move(big_endian));
  null_.push_back(false);
  types_.push_back(kInt8Oid);
  formats_.push_back(1);
  return *this;
}

Params& Params::add(std::string_view text) {
  values_.emplace_back(text);
  null_.push_back(false);
  types_.push_back(kTextOid);
  formats_.push_back(1);  // binary text is the bytes themselves (no NUL termination needed)
  return *this;
}

Params& Params::add(ByteView bytes) {
  values_.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  null_.push_back(false);
  types_.push_back(kByteaOid);
  formats_.push_back(1);
  return *this;
}

Params& Params::add_null_text() {
  values_.emplace_back();
  null_.push_back(true);
  types_.push_back(kTextOid);
  formats_.push_back(1);
  return *this;
}

Result::~Result() { PQclear(result_); }

int Result::rows() const { return PQntuples(result_); }

bool Result::is_null(int row, int column) const { return PQgetisnull(result_, row, column) != 0; }

std::int64_t Result::integer(int row, int column) const {
  const auto* data = reinterpret_cast<const unsigned char*>(PQgetvalue(result_, row, column));
  const int length = PQgetlength(result_, row, column);
  std::uint64_t bits = 0;
  for (int i = 0; i < length; ++i) bits = (bits << 8) | data[i];
  if (length > 0 && length < 8 && (data[0] & 0x80)) bits |= ~std::uint64_t{0} << (8 * length);
  return static_cast<std::int64_t>(bits);
}

std::string Result::text(int row, int column) const {
  return std::string(PQgetvalue(result_, row, column),
                     static_cast<std::size_t>(PQgetlength(result_, row, column)));
}

ByteView Result::bytes_view(int row, int column) const {
  return ByteView(reinterpret_cast<const std::uint8_t*>(PQgetvalue(result_, row, column)),
                  static_cast<std::size_t>(PQgetlength(result_, row, column)));
}

std::vector<std::uint8_t> Result::bytes(int row, int column) const {
  const ByteView view = bytes_view(row, column);
  return std::vector<std::uint8_t>(view.begin(), view.end());
}

std::int64_t Result::affected() const {
  const char* tuples = PQcmdTuples(result_);
  return tuples && *tuples ? std::stoll(tuples) : 0;
}

Connection::Connection(const std::string& conninfo, const std::string& password,
                       std::string display)
    : display_(std::move(display)) {
  // Keywords before dbname are defaults the URI may override; the password comes after.
  const char* keywords[] = {"connect_timeout", "application_name", "dbname",
                            password.empty() ? nullptr : "password", nullptr};
  const char* values[] = {"5", "kms", conninfo.c_str(), password.c_str(), nullptr};
  conn_ = PQconnectdbParams(keywords, values, 1);
  if (conn_ == nullptr) throw Error(ErrorKind::unavailable, "database " + display_ + ": no memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string reason = trimmed(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    throw Error(ErrorKind::unavailable, "database " + display_ + ": cannot connect: " + reason);
  }
  // Our notices (e.g. "relation already exists, skipping") are not the operator's business.
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
}

Connection::~Connection() { PQfinish(conn_); }

bool Connection::broken() const { return conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK; }

void Connection::fail(std::string_view what, pg_result* result) {
  const char* state_field = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string state = state_field ? state_field : "";
  std::string reason = trimmed(result ? PQresultErrorMessage(result) : nullptr);
  if (reason.empty()) reason = trimmed(PQerrorMessage(conn_));
  PQclear(result);
  const std::string message = "database " + display_ + ": " + std::string(what) + ": " + reason;
  if (broken() || unavailable_state(state)) throw Error(ErrorKind::unavailable, message);
  if (state == "40001" || state == "40P01") throw Error(ErrorKind::conflict, message);
  if (state == "23505") throw Error(ErrorKind::duplicate, message);
  if (state == "42P01" || state == "42703") throw Error(ErrorKind::schema, message);
  throw Error(ErrorKind::other, message);
}

void Connection::exec(const char* sql) {
  PGresult* result = PQexec(conn_, sql);
  const ExecStatusType status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(sql, result);
  PQclear(result);
}

Result Connection::query(const char* sql, const Params& params) {
  auto found = prepared_.find(std::string_view(sql));
  if (found == prepared_.end()) {
    const std::string name = "kms_" + std::to_string(prepared_.size() + 1);
    PGresult* prepared = PQprepare(conn_, name.c_str(), sql, static_cast<int>(params.types_.size()),
                                   params.types_.data());
    if (prepared == nullptr || PQresultStatus(prepared) != PGRES_COMMAND_OK) {
      fail(std::string("prepare ") + sql, prepared);
    }
    PQclear(prepared);
    found = prepared_.emplace(sql, name).first;
  }
  const std::size_t count = params.values_.size();
  std::vector<const char*> values(count);
  std::vector<int> lengths(count);
  for (std::size_t i = 0; i < count; ++i) {
    values[i] = params.null_[i] ? nullptr : params.values_[i].data();
    lengths[i] = static_cast<int>(params.values_[i].size());
  }
  PGresult* result =
      PQexecPrepared(conn_, found->second.c_str(), static_cast<int>(count), values.data(),
                     lengths.data(), params.formats_.data(), /*resultFormat=*/1);
  const ExecStatusType status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(sql, result);
  return Result(result);
}

Transaction::Transaction(Connection& connection, const char* begin) : connection_(connection) {
  connection_.exec(begin);
}

Transaction::~Transaction() {
  if (done_ || connection_.broken()) return;
  try {
    connection_.exec("ROLLBACK");
  } catch (...) {  // the connection is then broken and the pool drops it
  }
}

void Transaction::commit() {
  done_ = true;  // a failed COMMIT has ended the transaction too
  connection_.exec("COMMIT");
}

Savepoint::Savepoint(Connection& connection) : connection_(connection) {
  connection_.exec("SAVEPOINT write");
}

Savepoint::~Savepoint() {
  if (done_ || connection_.broken()) return;
  try {
    connection_.exec("ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write");
  } catch (...) {  // best effort: the enclosing transaction then fails as a whole
  }
}

void Savepoint::release() {
  connection_.exec("RELEASE SAVEPOINT write");
  done_ = true;
}

void Savepoint::rollback() {
  done_ = true;
  connection_.exec("ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write");
}

Pool::Pool(const DatabaseUrl& url, std::chrono::milliseconds acquire_timeout)
    : conninfo_(url.conninfo),
      password_(read_database_password(url)),
      display_(url.display()),
      size_(url.pool_size == 0 ? 1 : url.pool_size),
      acquire_timeout_(acquire_timeout) {
  try {
    idle_.push_back(connect());
  } catch (...) {
    wipe(password_);
    throw;
  }
  open_ = 1;
}

Pool::~Pool() { wipe(password_); }

std::unique_ptr<Connection> Pool::connect() {
  return std::make_unique<Connection>(conninfo_, password_, display_);
}

Pool::Lease Pool::acquire() {
  std::unique_lock lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + acquire_timeout_;
  for (;;) {
    while (!idle_.empty()) {
      std::unique_ptr<Connection> connection = std::move(idle_.back());
      idle_.pop_back();
      if (!connection->broken()) return Lease(*this, std::move(connection));
      --open_;  // gone while idle (a server restart): replaced below
    }
    if (open_ < size_) {
      ++open_;
      lock.unlock();
      try {
        return Lease(*this, connect());
      } catch (...) {
        lock.lock();
        --open_;
        returned_.notify_one();
        throw;
      }
    }
    if (returned_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= size_) {
      throw Error(ErrorKind::busy, "database " + display_ + ": every pooled connection is busy");
    }
  }
}

void Pool::give_back(std::unique_ptr<Connection> connection) {
  std::lock_guard lock(mutex_);
  if (connection->broken()) {
    --open_;
  } else {
    idle_.push_back(std::move(connection));
  }
  returned_.notify_one();
}

Pool::Lease::~Lease() {
  if (pool_ && connection_) pool_->give_back(std::move(connection_));
}

std::unique_ptr<Connection> connect(const DatabaseUrl& url) {
  std::string password = read_database_password(url);
  try {
    auto connection = std::make_unique<Connection>(url.conninfo, password, url.display());
    wipe(password);
    return connection;
  } catch (...) {
    wipe(password);
    throw;
  }
}

}  // namespace storage::pg
