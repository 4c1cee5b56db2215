// Versioned schemas. Each component (the key database, the conference registry) lists its
// migrations in order; version N is the first N applied. The table kms_schema records each
// component's version. SQLite files are migrated when opened; a PostgreSQL database when
// opened with migrate=auto (the default), or by `kms-provision db migrate`; with
// migrate=check an older schema is an error that says so. A schema newer than this build is
// always an error (an older kmsd must not write to a database it does not understand).
// Migrations run in one transaction; on PostgreSQL under an advisory lock, so nodes starting
// together migrate once.
#pragma once

#include <string>
#include <vector>

#include "storage/database_url.h"

namespace storage {

namespace sqlite {
class Connection;
}
namespace pg {
class Connection;
}

struct SchemaSteps {
  std::string component;           // "key_database", "registry"
  std::vector<const char*> steps;  // SQL of version 1, 2, ...
  int version() const noexcept { return static_cast<int>(steps.size()); }
};

// 0 when the component has no schema yet.
int schema_version(sqlite::Connection& connection, const std::string& component);
int schema_version(pg::Connection& connection, const std::string& component);

// Brings the component to this build's version. Throws Error(schema) if it is newer.
void migrate(sqlite::Connection& connection, const SchemaSteps& schema);
void migrate(pg::Connection& connection, const SchemaSteps& schema);

// migrate() under MigrationPolicy::automatic; under check_only throws Error(schema) unless
// the component is at this build's version, naming both versions and the fix.
void prepare_schema(pg::Connection& connection, const SchemaSteps& schema, MigrationPolicy policy);

}  // namespace storage
