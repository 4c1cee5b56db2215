#include "storage/kms_schema.h"

#include <cstring>

#include "storage/postgres.h"
#include "storage/sqlite.h"

namespace storage {
namespace {

// Version 1 on SQLite is what every release before versioning created (IF NOT EXISTS: an
// existing file is adopted as version 1 unchanged).
constexpr const char* kSqliteIdentities = R"sql(
CREATE TABLE IF NOT EXISTS kms_identities (
  kind        TEXT    NOT NULL CHECK (kind IN ('subscriber', 'bridge')),
  identity    TEXT    NOT NULL,
  status      TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  key_version INTEGER NOT NULL CHECK (key_version >= 1),
  mode        TEXT    NOT NULL CHECK (mode IN ('wrapped', 'token')),
  wrapped_key BLOB,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (kind, identity)
) WITHOUT ROWID;
)sql";

constexpr const char* kPostgresIdentities = R"sql(
CREATE TABLE kms_identities (
  kind        text    NOT NULL CHECK (kind IN ('subscriber', 'bridge')),
  identity    text    NOT NULL,
  status      text    NOT NULL CHECK (status IN ('active', 'revoked')),
  key_version bigint  NOT NULL CHECK (key_version >= 1),
  mode        text    NOT NULL CHECK (mode IN ('wrapped', 'token')),
  wrapped_key bytea,
  created_at  bigint  NOT NULL,
  updated_at  bigint  NOT NULL,
  PRIMARY KEY (kind, identity)
);
)sql";

// Key database version 2: the key check values (KCVs) of the KMS keys the nodes' tokens must
// hold, with who recorded each and when (tokens/key_check_store.h). kms-provision records
// them when it makes or replaces the keys; kmsd compares its token with them at start.
constexpr const char* kSqliteKeyCheckValues = R"sql(
CREATE TABLE IF NOT EXISTS kms_key_check_values (
  label       TEXT    PRIMARY KEY CHECK (label IN ('kms/master', 'kms/storage', 'kms/transport')),
  kcv         TEXT    NOT NULL,
  profile     TEXT    NOT NULL,
  recorded_at INTEGER NOT NULL,
  recorded_by TEXT    NOT NULL,
  command     TEXT    NOT NULL,
  token       TEXT    NOT NULL
) WITHOUT ROWID;
)sql";

constexpr const char* kPostgresKeyCheckValues = R"sql(
CREATE TABLE kms_key_check_values (
  label       text   PRIMARY KEY CHECK (label IN ('kms/master', 'kms/storage', 'kms/transport')),
  kcv         text   NOT NULL,
  profile     text   NOT NULL,
  recorded_at bigint NOT NULL,
  recorded_by text   NOT NULL,
  command     text   NOT NULL,
  token       text   NOT NULL
);
)sql";

constexpr const char* kSqliteRegistry = R"sql(
CREATE TABLE IF NOT EXISTS conferences (
  conference_id BLOB PRIMARY KEY,
  chair_id      TEXT NOT NULL,
  chair_nonce   BLOB NOT NULL,
  chair_key_id  BLOB NOT NULL,
  profile       INTEGER NOT NULL,
  suite         INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER NOT NULL,
  bridge_id     TEXT,
  bound_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conferences_by_expiry ON conferences(expires_at);
CREATE TABLE IF NOT EXISTS conference_members (
  conference_id BLOB NOT NULL,
  member_id     TEXT NOT NULL,
  nonce         BLOB NOT NULL,
  key_id        BLOB NOT NULL,
  admitted_at   INTEGER NOT NULL,
  seq           INTEGER NOT NULL,
  PRIMARY KEY (conference_id, member_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS used_envelopes (
  digest         BLOB PRIMARY KEY,
  request_digest BLOB NOT NULL,
  expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_envelopes_by_expiry ON used_envelopes(expires_at);
CREATE TABLE IF NOT EXISTS audit_anchor (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  seq        INTEGER NOT NULL,
  hash       TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
)sql";

// Several nodes share one PostgreSQL database: each keeps the anchor of its own audit log
// (keyed by node name). Conference members and envelopes reference nothing by foreign key:
// the registry deletes them with their conference itself, in the same transaction.
constexpr const char* kPostgresRegistry = R"sql(
CREATE TABLE conferences (
  conference_id bytea PRIMARY KEY,
  chair_id      text NOT NULL,
  chair_nonce   bytea NOT NULL,
  chair_key_id  bytea NOT NULL,
  profile       integer NOT NULL,
  suite         integer NOT NULL,
  created_at    bigint NOT NULL,
  expires_at    bigint NOT NULL,
  bridge_id     text,
  bound_at      bigint
);
CREATE INDEX conferences_by_expiry ON conferences(expires_at);
CREATE TABLE conference_members (
  conference_id bytea NOT NULL,
  member_id     text NOT NULL,
  nonce         bytea NOT NULL,
  key_id        bytea NOT NULL,
  admitted_at   bigint NOT NULL,
  seq           bigint NOT NULL,
  PRIMARY KEY (conference_id, member_id)
);
CREATE TABLE used_envelopes (
  digest         bytea PRIMARY KEY,
  request_digest bytea NOT NULL,
  expires_at     bigint NOT NULL
);
CREATE INDEX used_envelopes_by_expiry ON used_envelopes(expires_at);
CREATE TABLE audit_anchor (
  node       text PRIMARY KEY,
  seq        bigint NOT NULL,
  hash       text NOT NULL,
  updated_at bigint NOT NULL
);
)sql";

// Registry step 2: the audit journal (kms/include/kms/audit.h AuditJournal). A registry
// batch stores the audit records it made, not yet synced in the node's audit file, in its
// own transaction: one durable write per batch. Rows are per node and log (each node has
// its own chain, as audit_anchor; `log` is the audit file's absolute path, so two logs
// under one node name never mix) and deleted once the log's file has synced them.
constexpr const char* kSqliteAuditJournal = R"sql(
CREATE TABLE IF NOT EXISTS audit_journal (
  node TEXT    NOT NULL,
  log  TEXT    NOT NULL,
  seq  INTEGER NOT NULL,
  hash TEXT    NOT NULL,
  line TEXT    NOT NULL,
  PRIMARY KEY (node, log, seq)
) WITHOUT ROWID;
)sql";

constexpr const char* kPostgresAuditJournal = R"sql(
CREATE TABLE audit_journal (
  node text   NOT NULL,
  log  text   NOT NULL,
  seq  bigint NOT NULL,
  hash text   NOT NULL,
  line text   NOT NULL,
  PRIMARY KEY (node, log, seq)
);
)sql";

}  // namespace

const SchemaSteps& key_database_schema(Backend backend) {
  static const SchemaSteps sqlite{"key_database", {kSqliteIdentities, kSqliteKeyCheckValues}};
  static const SchemaSteps postgresql{"key_database",
                                      {kPostgresIdentities, kPostgresKeyCheckValues}};
  return backend == Backend::sqlite ? sqlite : postgresql;
}

const SchemaSteps& registry_schema(Backend backend) {
  static const SchemaSteps sqlite{"registry", {kSqliteRegistry, kSqliteAuditJournal}};
  static const SchemaSteps postgresql{"registry", {kPostgresRegistry, kPostgresAuditJournal}};
  return backend == Backend::sqlite ? sqlite : postgresql;
}

std::vector<std::string> migrate_database(const DatabaseUrl& url) {
  std::vector<std::string> lines;
  auto line = [&](const SchemaSteps& schema, int before) {
    lines.push_back(schema.component + ": version " + std::to_string(before) + " -> " +
                    std::to_string(schema.version()));
  };
  if (url.backend == Backend::sqlite) {
    sqlite::OpenOptions options;
    options.create = false;  // a new file is created by the key database, owner-only
    sqlite::Connection connection(url.sqlite_path, options);
    for (const SchemaSteps* schema :
         {&key_database_schema(url.backend), &registry_schema(url.backend)}) {
      const int before = schema_version(connection, schema->component);
      migrate(connection, *schema);
      line(*schema, before);
    }
    return lines;
  }
  const std::unique_ptr<pg::Connection> owned = pg::connect(url);
  pg::Connection& connection = *owned;
  for (const SchemaSteps* schema :
       {&key_database_schema(url.backend), &registry_schema(url.backend)}) {
    const int before = schema_version(connection, schema->component);
    migrate(connection, *schema);
    line(*schema, before);
  }
  return lines;
}

}  // namespace storage
