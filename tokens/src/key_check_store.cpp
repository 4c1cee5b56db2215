#include "tokens/key_check_store.h"

#include <cstring>
#include <ctime>

#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "storage/postgres.h"
#include "storage/sqlite.h"
#include "tokens/key_database.h"
#include "tokens/unix_time.h"

namespace tokens {
namespace {

constexpr const char* kColumns = "label, kcv, profile, recorded_at, recorded_by, command, token";

// As KeyDatabase: storage errors become this layer's (unavailable is worth retrying).
template <typename Body>
auto translated(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const storage::Error& error) {
    if (error.kind() == storage::ErrorKind::unavailable) {
      throw DatabaseUnavailableError(error.what());
    }
    throw DatabaseError(std::string("key check values: ") + error.what());
  }
}

}  // namespace

std::string describe(const RecordedKeyCheck& recorded) {
  return recorded.label + " " + recorded.kcv + " (profile " + recorded.profile + ", recorded " +
         utc_timestamp(recorded.recorded_at) + " by " + recorded.command + " on " +
         recorded.recorded_by + ", token " + recorded.token + ")";
}

class KeyCheckStore::Backend {
 public:
  virtual ~Backend() = default;
  virtual std::vector<RecordedKeyCheck> list() = 0;
  virtual std::optional<RecordedKeyCheck> find(const std::string& label) = 0;
  virtual bool insert_if_absent(const RecordedKeyCheck& check) = 0;  // inserted
  virtual void upsert(const RecordedKeyCheck& check) = 0;
  virtual void erase(const std::string& label) = 0;
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
};

namespace {

const std::string kSelectAll =
    std::string("SELECT ") + kColumns + " FROM kms_key_check_values ORDER BY label";
const std::string kSelectOne =
    std::string("SELECT ") + kColumns + " FROM kms_key_check_values WHERE label = ";
const std::string kInsert = std::string("INSERT INTO kms_key_check_values (") + kColumns +
                            ") VALUES ($1, $2, $3, $4, $5, $6, $7) ";
constexpr const char* kUpdateAll =
    "ON CONFLICT (label) DO UPDATE SET kcv = excluded.kcv, profile = excluded.profile, "
    "recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by, "
    "command = excluded.command, token = excluded.token";

class SqliteBackend final : public KeyCheckStore::Backend {
 public:
  explicit SqliteBackend(const std::string& path) : connection_(path) {
    storage::migrate(connection_, storage::key_database_schema(storage::Backend::sqlite));
  }
  std::vector<RecordedKeyCheck> list() override {
    storage::sqlite::Query query(connection_, kSelectAll.c_str());
    std::vector<RecordedKeyCheck> out;
    while (query.step()) out.push_back(read(query));
    return out;
  }
  std::optional<RecordedKeyCheck> find(const std::string& label) override {
    static const std::string sql = kSelectOne + "?1";
    storage::sqlite::Query query(connection_, sql.c_str());
    query.bind(1, label);
    if (!query.step()) return std::nullopt;
    return read(query);
  }
  bool insert_if_absent(const RecordedKeyCheck& check) override {
    static const std::string sql = kInsert + "ON CONFLICT (label) DO NOTHING";
    storage::sqlite::Query query(connection_, sql.c_str());
    bind(query, check).run();
    return connection_.changes() == 1;
  }
  void upsert(const RecordedKeyCheck& check) override {
    static const std::string sql = kInsert + kUpdateAll;
    storage::sqlite::Query query(connection_, sql.c_str());
    bind(query, check).run();
  }
  void erase(const std::string& label) override {
    storage::sqlite::Query query(connection_, "DELETE FROM kms_key_check_values WHERE label = ?1");
    query.bind(1, label).run();
  }
  void begin() override { connection_.exec("BEGIN IMMEDIATE"); }
  void commit() override { connection_.exec("COMMIT"); }
  void rollback() noexcept override {
    try {
      connection_.exec("ROLLBACK");
    } catch (...) {  // the connection rolls back when it closes
    }
  }

 private:
  // SQLite numbers $1 .. $7 in order of appearance, as PostgreSQL does.
  static storage::sqlite::Query& bind(storage::sqlite::Query& query,
                                      const RecordedKeyCheck& check) {
    return query.bind(1, check.label)
        .bind(2, check.kcv)
        .bind(3, check.profile)
        .bind(4, check.recorded_at)
        .bind(5, check.recorded_by)
        .bind(6, check.command)
        .bind(7, check.token);
  }
  static RecordedKeyCheck read(const storage::sqlite::Query& row) {
    return {row.text(0), row.text(1), row.text(2), row.integer(3),
            row.text(4), row.text(5), row.text(6)};
  }
  storage::sqlite::Connection connection_;
};

class PostgresBackend final : public KeyCheckStore::Backend {
 public:
  explicit PostgresBackend(const storage::DatabaseUrl& url) : owned_(storage::pg::connect(url)) {
    storage::prepare_schema(*owned_, storage::key_database_schema(storage::Backend::postgresql),
                            url.migration);
  }
  std::vector<RecordedKeyCheck> list() override {
    const storage::pg::Result rows = owned_->query(kSelectAll.c_str());
    std::vector<RecordedKeyCheck> out;
    for (int row = 0; row < rows.rows(); ++row) out.push_back(read(rows, row));
    return out;
  }
  std::optional<RecordedKeyCheck> find(const std::string& label) override {
    static const std::string sql = kSelectOne + "$1";
    const storage::pg::Result rows = owned_->query(sql.c_str(), storage::pg::Params().add(label));
    if (rows.rows() == 0) return std::nullopt;
    return read(rows, 0);
  }
  bool insert_if_absent(const RecordedKeyCheck& check) override {
    static const std::string sql = kInsert + "ON CONFLICT (label) DO NOTHING";
    return owned_->query(sql.c_str(), params(check)).affected() == 1;
  }
  void upsert(const RecordedKeyCheck& check) override {
    static const std::string sql = kInsert + kUpdateAll;
    owned_->query(sql.c_str(), params(check));
  }
  void erase(const std::string& label) override {
    owned_->query("DELETE FROM kms_key_check_values WHERE label = $1",
                  storage::pg::Params().add(label));
  }
  void begin() override { owned_->exec("BEGIN"); }
  void commit() override { owned_->exec("COMMIT"); }
  void rollback() noexcept override {
    try {
      if (!owned_->broken()) owned_->exec("ROLLBACK");
    } catch (...) {  // the server rolls back when the connection closes
    }
  }

 private:
  static storage::pg::Params params(const RecordedKeyCheck& check) {
    storage::pg::Params p;
    p.add(check.label)
        .add(check.kcv)
        .add(check.profile)
        .add(check.recorded_at)
        .add(check.recorded_by)
        .add(check.command)
        .add(check.token);
    return p;
  }
  static RecordedKeyCheck read(const storage::pg::Result& rows, int row) {
    return {rows.text(row, 0), rows.text(row, 1), rows.text(row, 2), rows.integer(row, 3),
            rows.text(row, 4), rows.text(row, 5), rows.text(row, 6)};
  }
  std::unique_ptr<storage::pg::Connection> owned_;
};

// One transaction around `body` (rolled back when it throws).
template <typename Body>
auto in_transaction(KeyCheckStore::Backend& backend, Body&& body) -> decltype(body()) {
  return translated([&] {
    backend.begin();
    try {
      auto result = body();
      backend.commit();
      return result;
    } catch (...) {
      backend.rollback();
      throw;
    }
  });
}

}  // namespace

KeyCheckStore::KeyCheckStore(const std::string& database) {
  const storage::DatabaseUrl url =
      translated([&] { return storage::DatabaseUrl::parse(database); });
  if (url.backend == storage::Backend::sqlite) {
    // Created owner-only if new, as the key database is (its findings are KeyDatabase's to log).
    (void)prepare_database_file(url.sqlite_path);
    backend_ = translated([&] { return std::make_unique<SqliteBackend>(url.sqlite_path); });
  } else {
    backend_ = translated([&] { return std::make_unique<PostgresBackend>(url); });
  }
}

KeyCheckStore::~KeyCheckStore() = default;

std::vector<RecordedKeyCheck> KeyCheckStore::list() {
  return translated([&] { return backend_->list(); });
}

std::optional<RecordedKeyCheck> KeyCheckStore::find(const std::string& label) {
  return translated([&] { return backend_->find(label); });
}

KeyCheckStore::Recorded KeyCheckStore::record_if_absent(const RecordedKeyCheck& check) {
  return in_transaction(*backend_, [&] {
    if (backend_->insert_if_absent(check)) return Recorded{check, true};
    auto recorded = backend_->find(check.label);  // the winner's (read committed sees it)
    if (!recorded) {
      throw storage::Error(storage::ErrorKind::conflict,
                           "the recorded value of " + check.label + " vanished meanwhile");
    }
    return Recorded{std::move(*recorded), false};
  });
}

std::optional<RecordedKeyCheck> KeyCheckStore::replace(const RecordedKeyCheck& check) {
  return in_transaction(*backend_, [&] {
    auto before = backend_->find(check.label);
    if (!before || before->kcv != check.kcv) backend_->upsert(check);
    return before;
  });
}

std::optional<RecordedKeyCheck> KeyCheckStore::erase(const std::string& label) {
  return in_transaction(*backend_, [&] {
    auto before = backend_->find(label);
    if (before) backend_->erase(label);
    return before;
  });
}

}  // namespace tokens
