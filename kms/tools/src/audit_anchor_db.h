// Reads the audit anchor (the audit log's durable head) that kmsd's registry database
// stores with every committed admission or release (table audit_anchor, docs/SERVER.md).
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "kms/audit.h"

namespace kms::tools {

class AnchorDbError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// nullopt when nothing was anchored yet; throws AnchorDbError when the file can't be opened
// read-only or is not a registry database.
std::optional<AuditHead> read_audit_anchor(const std::string& db_path);

}  // namespace kms::tools
