// Audit log segments (docs/SERVER.md, "Audit log"). The chain is one sequence of records
// split over files: the live file (audit.path) and the rotated segments
// "<audit.path>.000001", "<audit.path>.000002", ... (6 digits or more, so that names sort
// by number). Segment 1 starts the chain (its first record has prev = 64 zeros) and has no
// header, so a log from before rotation existed is segment 1 as it is. Every later segment
// starts with a header record that continues the chain from the previous segment's last
// record (its seq is one more, its prev is that record's hash) and says so explicitly:
//   {"seq":N,...,"prev":"<H>","event":"audit_segment","outcome":"ok","fields":{
//    "previous_last_hash":"<H>","previous_last_seq":"<N-1>","reason":"size|age|reopen|start",
//    "segment":"<number>"},"hash":"..."}
// so a missing, reordered or renamed segment breaks verification at a named file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kms/audit.h"

namespace kms::audit {

inline constexpr std::string_view kSegmentEvent = "audit_segment";
inline constexpr std::size_t kSegmentDigits = 6;

// "<live_path>.000042".
std::string segment_path(const std::string& live_path, std::uint64_t number);
// The number in a rotated segment's name (a suffix of "." and at least 6 digits), if any.
std::optional<std::uint64_t> segment_number_in_name(std::string_view file_name);

AuditEvent segment_header_event(std::uint64_t number, const AuditHead& previous,
                                std::string_view reason);

// What the first record of a file says about the segment it starts.
struct SegmentStart {
  bool header = false;       // an audit_segment record
  std::uint64_t number = 0;  // 1 for the chain's first segment (no header)
  std::uint64_t seq = 0;     // the record's seq
  std::string prev;          // the record's prev
  std::string time;          // the record's time
  AuditHead previous;        // header only: what it names as the previous segment's end
};
// nullopt when the line is not a record, or is neither a header nor the chain's first record
// (seq 1, prev 64 zeros). A header's own hash is not checked here (the verifier does).
std::optional<SegmentStart> parse_segment_start(std::string_view line);

}  // namespace kms::audit
