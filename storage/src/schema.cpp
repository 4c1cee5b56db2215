#include "storage/schema.h"

#include "storage/error.h"
#include "storage/postgres.h"
#include "storage/sqlite.h"

namespace storage {
namespace {

constexpr const char* kSqliteVersions =
    "CREATE TABLE IF NOT EXISTS kms_schema (component TEXT PRIMARY KEY, "
    "version INTEGER NOT NULL)";
constexpr const char* kPostgresVersions =
    "CREATE TABLE IF NOT EXISTS kms_schema (component text PRIMARY KEY, "
    "version integer NOT NULL, migrated_at timestamptz NOT NULL DEFAULT now())";
// Any fixed number: the nodes of one database agree on it.
constexpr const char* kMigrationLock = "SELECT pg_advisory_xact_lock(7170157)";

[[noreturn]] void newer(const std::string& where, const SchemaSteps& schema, int found) {
  throw Error(ErrorKind::schema, "database " + where + ": the " + schema.component +
                                     " schema is at version " + std::to_string(found) +
                                     ", newer than this build's " +
                                     std::to_string(schema.version()) +
                                     ": upgrade this program before using the database");
}

}  // namespace

int schema_version(sqlite::Connection& connection, const std::string& component) {
  sqlite::Query exists(connection,
                       "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                       "name = 'kms_schema'");
  if (!exists.step() || exists.integer(0) == 0) return 0;
  sqlite::Query version(connection, "SELECT version FROM kms_schema WHERE component = ?1");
  version.bind(1, component);
  return version.step() ? static_cast<int>(version.integer(0)) : 0;
}

int schema_version(pg::Connection& connection, const std::string& component) {
  const pg::Result exists = connection.query(
      "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'kms_schema' "
      "AND schemaname = current_schema()");
  if (exists.integer(0, 0) == 0) return 0;
  const pg::Result version = connection.query("SELECT version FROM kms_schema WHERE component = $1",
                                              pg::Params().add(component));
  return version.rows() == 0 ? 0 : static_cast<int>(version.integer(0, 0));
}

void migrate(sqlite::Connection& connection, const SchemaSteps& schema) {
  sqlite::Transaction transaction(connection);
  connection.exec(kSqliteVersions);
  const int found = schema_version(connection, schema.component);
  if (found > schema.version()) newer(connection.path(), schema, found);
  if (found == schema.version()) return;  // rolled back: nothing was changed
  for (int step = found; step < schema.version(); ++step) connection.exec(schema.steps[step]);
  sqlite::Query record(connection,
                       "INSERT INTO kms_schema (component, version) VALUES (?1, ?2) "
                       "ON CONFLICT (component) DO UPDATE SET version = excluded.version");
  record.bind(1, schema.component).bind(2, std::int64_t{schema.version()}).run();
  transaction.commit();
}

void migrate(pg::Connection& connection, const SchemaSteps& schema) {
  pg::Transaction transaction(connection);
  connection.exec(kMigrationLock);
  connection.exec(kPostgresVersions);
  const int found = schema_version(connection, schema.component);
  if (found > schema.version()) newer(connection.display(), schema, found);
  if (found == schema.version()) return;
  for (int step = found; step < schema.version(); ++step) connection.exec(schema.steps[step]);
  connection.query(
      "INSERT INTO kms_schema (component, version) VALUES ($1, $2) ON CONFLICT (component) "
      "DO UPDATE SET version = excluded.version, migrated_at = now()",
      pg::Params().add(schema.component).add(std::int64_t{schema.version()}));
  transaction.commit();
}

void prepare_schema(pg::Connection& connection, const SchemaSteps& schema, MigrationPolicy policy) {
  if (policy == MigrationPolicy::automatic) return migrate(connection, schema);
  const int found = schema_version(connection, schema.component);
  if (found > schema.version()) newer(connection.display(), schema, found);
  if (found < schema.version()) {
    throw Error(ErrorKind::schema,
                "database " + connection.display() + ": the " + schema.component +
                    " schema is at version " + std::to_string(found) + ", this build needs " +
                    std::to_string(schema.version()) +
                    ": run `kms-provision db migrate` (or drop migrate=check from the url)");
  }
}

}  // namespace storage
