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
  const std::unique_ptr<storage::pg::Connection> db = storage::pg::connect(url);
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

using JournalRows = std::map<std::string, std::vector<AuditJournalLine>>;

JournalRows journal_sqlite(const std::string& path, const std::string& node) {
  storage::sqlite::OpenOptions options;
  options.read_only = true;
  try {
    storage::sqlite::Connection db(path, options);
    {
      storage::sqlite::Query table(
          db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_journal'");
      if (!table.step()) return {};  // a database from before the journal
    }
    storage::sqlite::Query query(
        db, "SELECT log, seq, hash, line FROM audit_journal WHERE node = ?1 ORDER BY log, seq");
    query.bind(1, node);
    JournalRows rows;
    while (query.step()) {
      rows[query.text(0)].push_back(
          {static_cast<std::uint64_t>(query.integer(1)), query.text(2), query.text(3)});
    }
    return rows;
  } catch (const storage::Error& error) {
    throw AnchorDbError("cannot read the audit journal from " + path + ": " + error.what());
  }
}

JournalRows journal_postgres(const storage::DatabaseUrl& url, const std::string& node) {
  const std::unique_ptr<storage::pg::Connection> db = storage::pg::connect(url);
  if (db->query("SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_name = 'audit_journal'")
          .integer(0, 0) == 0) {
    return {};  // a database from before the journal
  }
  const storage::pg::Result rows =
      db->query("SELECT log, seq, hash, line FROM audit_journal WHERE node = $1 ORDER BY log, seq",
                storage::pg::Params().add(node));
  JournalRows lines;
  for (int i = 0; i < rows.rows(); ++i) {
    lines[rows.text(i, 0)].push_back(
        {static_cast<std::uint64_t>(rows.integer(i, 1)), rows.text(i, 2), rows.text(i, 3)});
  }
  return lines;
}

}  // namespace

std::map<std::string, std::vector<AuditJournalLine>> read_audit_journal(const std::string& database,
                                                                        const std::string& node) {
  try {
    const storage::DatabaseUrl url = storage::DatabaseUrl::parse(database);
    if (url.backend == storage::Backend::sqlite) return journal_sqlite(url.sqlite_path, node);
    return journal_postgres(url, node);
  } catch (const storage::Error& error) {
    throw AnchorDbError(error.what());
  }
}

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
