// The KMS's tables, per backend, as versioned migrations (storage/schema.h). They are here,
// beside the runner, so that `kms-provision db migrate` can bring every table up to date
// without linking the code that uses them; the key database (tokens/) and the conference
// registry (kms/core) each migrate their own component when they open.
//   key_database: kms_identities (subscribers and bridges: status, key version, wrapped key),
//                 kms_key_check_values (the KCVs every node's KMS keys must have)
//   registry:     conferences, conference_members, used_envelopes (the replay record),
//                 audit_anchor (each node's audit log head)
#pragma once

#include "storage/database_url.h"
#include "storage/schema.h"

namespace storage {

const SchemaSteps& key_database_schema(Backend backend);
const SchemaSteps& registry_schema(Backend backend);

// Creates or upgrades every component (kms-provision db migrate). Returns one line per
// component: "key_database: version 0 -> 1". Throws storage::Error.
std::vector<std::string> migrate_database(const DatabaseUrl& url);

}  // namespace storage
