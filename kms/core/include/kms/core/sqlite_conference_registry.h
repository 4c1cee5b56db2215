// The conference registry on an SQLite file (WAL, synchronous=FULL: an admission is durable
// when admit() returns). The file may be shared with the key database's table; this
// registry only touches conferences, conference_members, used_envelopes and audit_anchor.
// Group commit and rules: stored_conference_registry.h.
#pragma once

#include <string>

#include "kms/core/stored_conference_registry.h"

namespace kms {

class SqliteConferenceRegistry : public StoredConferenceRegistry {
 public:
  // Opens or creates the database file and the registry's tables. Throws
  // ProtocolError(internal_error) if the database can't be opened.
  explicit SqliteConferenceRegistry(const std::string& path, RegistryOptions options = {});
};

}  // namespace kms
