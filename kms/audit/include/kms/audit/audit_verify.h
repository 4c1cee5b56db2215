// Verifies an audit file's hash chain: every line a record, seq 1, 2, 3, ... in order,
// each record's hash matching its content and its "prev" the previous record's hash.
#pragma once

#include <cstdint>
#include <istream>
#include <string>

namespace kms::audit {

struct VerifyResult {
  bool ok = true;
  std::uint64_t records = 0;      // records that verified before the first problem
  std::uint64_t broken_line = 0;  // 1-based line number of the first broken record
  std::string problem;            // what is wrong with it
  std::string head_hash;          // hash of the last good record (kGenesisHash if none)
  std::uint64_t last_seq = 0;
};

VerifyResult verify_chain(std::istream& in);
VerifyResult verify_file(const std::string& path);

}  // namespace kms::audit
