// Verifies an audit file's hash chain: every line a record, seq 1, 2, 3, ... in order,
// each record's hash matching its content and its "prev" the previous record's hash.
// The chain alone can't see its last records deleted (a cut at a line boundary is still a
// valid chain); with an anchor (the head the registry database stored in its last COMMIT)
// the file must still hold the anchored record, with the anchored hash.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <string>

#include "kms/audit.h"

namespace kms::audit {

struct VerifyResult {
  bool ok = true;
  std::uint64_t records = 0;      // records that verified before the first problem
  std::uint64_t broken_line = 0;  // 1-based line number of the first broken record
  std::string problem;            // what is wrong with it
  std::string head_hash;          // hash of the last good record (kGenesisHash if none)
  std::uint64_t last_seq = 0;
  bool anchor_missing = false;  // the chain is intact but lacks the anchored record
};

VerifyResult verify_chain(std::istream& in, const std::optional<AuditHead>& anchor = {});
VerifyResult verify_file(const std::string& path, const std::optional<AuditHead>& anchor = {});

}  // namespace kms::audit
