// The audit chain verifier (kms/audit/src/audit_verify.cpp) on arbitrary files. A random
// line never carries a valid SHA-256, so the first input byte can ask the target to seal
// each line first (recompute its "hash" and set its "prev" to the previous line's hash, as
// the log writer would): the fuzzer then reaches the seq, prev and anchor checks behind the
// hash. The second byte chooses the anchor's seq (its hash: the one that line claims, or the
// genesis hash). verify_chain reports problems in its result; a
// throw, a crash, a sanitizer report or an inconsistent result is a bug.
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "kms/audit/audit_record.h"
#include "kms/audit/audit_verify.h"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

// Replaces the line's "prev" value (when it has 64 characters) and recomputes its hash.
std::string seal(std::string line, const std::string& prev) {
  static constexpr std::string_view kPrev = "\"prev\":\"";
  if (const auto at = line.find(kPrev);
      at != std::string::npos && line.size() >= at + kPrev.size() + 64) {
    line.replace(at + kPrev.size(), 64, prev);
  }
  const auto marker = line.rfind(kms::audit::kHashMarker);
  if (marker == std::string::npos) return line;
  const std::string body = line.substr(0, marker);
  return body + std::string(kms::audit::kHashMarker) + kms::audit::sha256_hex(body) + "\"}";
}

std::string sealed_chain(const std::string& text) {
  std::string out;
  std::string prev(kms::audit::kGenesisHash);
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    const bool complete = end != std::string::npos;
    const std::string line =
        seal(text.substr(start, complete ? end - start : std::string::npos), prev);
    const auto hash = kms::audit::line_hash(line);
    if (!hash.claimed.empty()) prev = hash.claimed;
    out += line;
    if (!complete) break;
    out += '\n';
    start = end + 1;
  }
  return out;
}

// The hash line `number` (from 1) claims, as the database would have anchored it.
std::string claimed_hash_of_line(const std::string& text, std::uint64_t number) {
  std::istringstream in(text);
  std::string line;
  for (std::uint64_t i = 1; std::getline(in, line); ++i) {
    if (i == number) return kms::audit::line_hash(line).claimed;
  }
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const bool sealed = (data[0] & 1) != 0;
  const bool anchored = (data[0] & 2) != 0;
  const bool anchor_hash_of_genesis = (data[0] & 4) != 0;
  std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (sealed) text = sealed_chain(text);

  std::optional<kms::AuditHead> anchor;
  if (anchored) {
    kms::AuditHead head;
    head.seq = data[1] & 0x0f;
    head.hash = anchor_hash_of_genesis ? std::string(kms::audit::kGenesisHash)
                                       : claimed_hash_of_line(text, head.seq);
    anchor = head;
  }
  std::istringstream in(text);
  const kms::audit::VerifyResult result = kms::audit::verify_chain(in, anchor);
  require(result.records == result.last_seq);
  if (result.ok) {
    require(result.broken_line == 0 && result.problem.empty() && !result.anchor_missing);
    require(!anchor || result.last_seq >= anchor->seq);
  } else {
    require(!result.problem.empty());
    require(result.anchor_missing || result.broken_line == result.records + 1);
  }
  return 0;
}
