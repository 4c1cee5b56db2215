#include "audit_anchor_db.h"

#include <cstdint>
#include <cstring>

#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/postgres.h"
#include "storage/sqlite.h"

namespace kms::tools {
namespace {

std::optional<AuditHead> read_sqlite(const std::string& path) {
  storage::sqlite::OpenOptions options;
  options.read_only = true;  // kmsd may be committing right now: busy_timeout waits
  std::unique_ptr<storage::sqlite::Connection> db;
  try {
    db = std::make_unique<storage::sqlite::Connection>(path, options);
  } catch (const storage::Error& error) {
    throw AnchorDbError(std::string("cannot open ") + path + ": " + error.what());
  }
  std::optional<storage::sqlite::Query> query;
  try {
    query.emplace(*db, "SELECT seq, hash FROM audit_anchor WHERE id = 1");
  } catch (const storage::Error& error) {
    throw AnchorDbError(path +
                        " is not a kmsd registry database with an audit anchor: " + error.what());
  }
  try {
    if (!query->step()) return std::nullopt;
  } catch (const storage::Error& error) {
    throw AnchorDbError("cannot read the audit anchor from " + path + ": " + error.what());
  }
  return AuditHead{static_cast<std::uint64_t>(query->integer(0)), query->text(1)};
}

std::optional<AuditHead> read_postgres(const storage::DatabaseUrl& url, const std::string& node) {
  std::string password = read_database_password(url);
  std::unique_ptr<storage::pg::Connection> db;
  try {
    db = std::make_unique<storage::pg::Connection>(url.conninfo, password, url.display());
  } catch (...) {
    if (!password.empty()) explicit_bzero(password.data(), password.size());
    throw;
  }
  if (!password.empty()) explicit_bzero(password.data(), password.size());
  try {
    const storage::pg::Result row = db->query("SELECT seq, hash FROM audit_anchor WHERE node = $1",
                                              storage::pg::Params().add(node));
    if (row.rows() == 0) return std::nullopt;
    return AuditHead{static_cast<std::uint64_t>(row.integer(0, 0)), row.text(0, 1)};
  } catch (const storage::Error& error) {
    if (error.kind() == storage::ErrorKind::schema) {
      throw AnchorDbError(url.display() +
                          " is not a kmsd registry database with an audit anchor: " + error.what());
    }
    throw;
  }
}

}  // namespace

std::optional<AuditHead> read_audit_anchor(const std::string& database, const std::string& node) {
  try {
    const storage::DatabaseUrl url = storage::DatabaseUrl::parse(database);
    if (url.backend == storage::Backend::sqlite) return read_sqlite(url.sqlite_path);
    return read_postgres(url, node);
  } catch (const storage::Error& error) {
    throw AnchorDbError(error.what());
  }
}

}  // namespace kms::tools
