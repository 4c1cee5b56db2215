// One audit record as a JSON line. The line format (docs/SERVER.md, "Audit log"):
//   {"seq":N,"time":"...Z","prev":"<hex SHA-256 of the previous record>","event":"...",
//    "outcome":"...","fields":{...},"hash":"<hex SHA-256 of this line up to ,"hash">"}
// The chain: each record's "prev" is the previous record's "hash"; the first record's
// "prev" is 64 zeros. "hash" covers every byte of the line before ',"hash":', so a changed
// byte anywhere in a record is detected at that record.
// Events: "admission", "retransmission", "key_release", "refusal" (outcome: the error
// code); "refusal_summary" (refusals before authentication counted per source and code
// per interval, refusal_summary.h); "audit_recovered" (the log cut a torn tail at start,
// or resumed after a failed write or sync: error, failed_at, refused, last_durable_seq,
// torn_bytes_removed; audit_log.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "kms/audit.h"

namespace kms::audit {

inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";
inline constexpr std::string_view kHashMarker = ",\"hash\":\"";

std::string sha256_hex(std::string_view data);

// JSON text is UTF-8, and a client-chosen value (a certificate's SAN URI, an identity cut
// at its length limit) need not be: the length of the well-formed UTF-8 sequence (RFC 3629)
// that starts at text[at], 0 if none does; and `text` with every byte that is not part of
// one replaced by U+FFFD.
std::size_t utf8_sequence_length(std::string_view text, std::size_t at);
std::string valid_utf8(std::string_view text);

// Builds the full line (without the trailing newline); strings made valid_utf8.
std::string format_record(std::uint64_t seq, std::string_view time, std::string_view prev_hash,
                          const AuditEvent& event);

// RFC 3339 UTC time with milliseconds: "2026-11-30T10:35:00.123Z".
std::string utc_rfc3339(std::chrono::system_clock::time_point time);
std::string utc_now_rfc3339();

// The hash a line claims, and whether it matches its content; empty claimed hash when the
// line has no hash field.
struct LineHash {
  std::string claimed;
  std::string computed;
  bool ok() const { return !claimed.empty() && claimed == computed; }
};
LineHash line_hash(std::string_view line);

}  // namespace kms::audit
