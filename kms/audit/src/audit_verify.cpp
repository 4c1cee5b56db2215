#include "kms/audit/audit_verify.h"

#include <boost/json.hpp>
#include <fstream>

#include "kms/audit/audit_record.h"

namespace kms::audit {
namespace {

// Checks one line against the chain state; returns the problem, or empty if it is good.
std::string check_line(const std::string& line, std::uint64_t expected_seq,
                       const std::string& expected_prev, std::string& hash_out) {
  const LineHash hash = line_hash(line);
  if (hash.claimed.empty()) return "no hash field (truncated or not an audit record)";
  boost::system::error_code ec;
  const boost::json::value value = boost::json::parse(line, ec);
  if (ec || !value.is_object()) return "not a JSON object";
  const auto& record = value.as_object();
  const auto* seq = record.if_contains("seq");
  const auto* prev = record.if_contains("prev");
  if (!seq || !seq->is_int64() || !prev || !prev->is_string() || !record.contains("time") ||
      !record.contains("event") || !record.contains("outcome")) {
    return "missing or mistyped field (seq, time, prev, event, outcome)";
  }
  if (!hash.ok()) return "hash does not match the record's content (record altered)";
  if (static_cast<std::uint64_t>(seq->as_int64()) != expected_seq) {
    return "seq " + std::to_string(seq->as_int64()) + ", expected " + std::to_string(expected_seq) +
           " (record missing or reordered)";
  }
  if (prev->as_string() != expected_prev) {
    return "prev does not match the previous record's hash (record missing, inserted or "
           "replaced before this one)";
  }
  hash_out = hash.claimed;
  return {};
}

std::string anchor_problem(const AuditHead& anchor, const std::string& found) {
  return "audit log truncated or altered: anchored seq " + std::to_string(anchor.seq) + " (hash " +
         anchor.hash + ") not found (" + found + ")";
}

}  // namespace

VerifyResult verify_chain(std::istream& in, const std::optional<AuditHead>& anchor) {
  VerifyResult result;
  result.head_hash = std::string(kGenesisHash);
  std::string line;
  std::uint64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const bool complete = !in.eof();  // getline hit a newline
    std::string hash;
    std::string problem = check_line(line, result.last_seq + 1, result.head_hash, hash);
    if (problem.empty() && !complete) problem = "last line has no newline (torn write)";
    if (!problem.empty()) {
      result.ok = false;
      result.broken_line = line_number;
      result.problem = problem;
      return result;
    }
    ++result.records;
    ++result.last_seq;
    result.head_hash = hash;
    if (anchor && result.last_seq == anchor->seq && hash != anchor->hash) {
      result.ok = false;
      result.anchor_missing = true;
      result.problem =
          anchor_problem(*anchor, "record " + std::to_string(anchor->seq) + " has hash " + hash);
      return result;
    }
  }
  if (anchor && result.last_seq < anchor->seq) {
    result.ok = false;
    result.anchor_missing = true;
    result.problem =
        anchor_problem(*anchor, "the log ends at seq " + std::to_string(result.last_seq));
  }
  return result;
}

VerifyResult verify_file(const std::string& path, const std::optional<AuditHead>& anchor) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    VerifyResult result;
    result.ok = false;
    result.problem = "cannot open " + path;
    return result;
  }
  return verify_chain(in, anchor);
}

}  // namespace kms::audit
