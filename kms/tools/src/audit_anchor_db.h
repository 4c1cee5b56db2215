// Reads the audit anchor (the audit log's durable head) that kmsd's registry database
// stores with every committed admission or release (table audit_anchor, docs/SERVER.md).
// The database is a URL or a plain SQLite path, as [database] url; on PostgreSQL each node
// has its own row (RegistryOptions::node, "kmsd" unless configured otherwise).
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kms/audit.h"

namespace kms::tools {

class AnchorDbError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// nullopt when nothing was anchored yet; throws AnchorDbError when the database can't be
// opened (read-only for SQLite) or is not a registry database.
std::optional<AuditHead> read_audit_anchor(const std::string& database,
                                           const std::string& node = "kmsd");

// The node's rows of the registry's audit journal (table audit_journal), per log (the audit
// file's absolute path as kmsd opened it), each in seq order: the records committed batches
// made durable that the log's file may not hold yet. Empty for a database from before the
// journal. Throws AnchorDbError as read_audit_anchor.
std::map<std::string, std::vector<AuditJournalLine>> read_audit_journal(
    const std::string& database, const std::string& node = "kmsd");

}  // namespace kms::tools
