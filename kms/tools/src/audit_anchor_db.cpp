#include "audit_anchor_db.h"

#include <sqlite3.h>

#include <cstdint>
#include <memory>

namespace kms::tools {
namespace {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};

}  // namespace

std::optional<AuditHead> read_audit_anchor(const std::string& db_path) {
  sqlite3* raw_db = nullptr;
  const int opened = sqlite3_open_v2(db_path.c_str(), &raw_db, SQLITE_OPEN_READONLY, nullptr);
  const std::unique_ptr<sqlite3, DbCloser> db(raw_db);
  if (opened != SQLITE_OK) {
    throw AnchorDbError("cannot open " + db_path + ": " +
                        (raw_db ? sqlite3_errmsg(raw_db) : "out of memory"));
  }
  sqlite3_busy_timeout(db.get(), 5000);  // kmsd may be committing right now
  sqlite3_stmt* raw_statement = nullptr;
  if (sqlite3_prepare_v2(db.get(), "SELECT seq, hash FROM audit_anchor WHERE id = 1", -1,
                         &raw_statement, nullptr) != SQLITE_OK) {
    throw AnchorDbError(db_path + " is not a kmsd registry database with an audit anchor: " +
                        sqlite3_errmsg(db.get()));
  }
  const std::unique_ptr<sqlite3_stmt, StatementFinalizer> statement(raw_statement);
  const int step = sqlite3_step(statement.get());
  if (step == SQLITE_DONE) return std::nullopt;
  if (step != SQLITE_ROW) {
    throw AnchorDbError("cannot read the audit anchor from " + db_path + ": " +
                        sqlite3_errmsg(db.get()));
  }
  const unsigned char* hash = sqlite3_column_text(statement.get(), 1);
  return AuditHead{static_cast<std::uint64_t>(sqlite3_column_int64(statement.get(), 0)),
                   hash ? reinterpret_cast<const char*>(hash) : ""};
}

}  // namespace kms::tools
