// Verifies an audit file's hash chain: every line a record, seq 1, 2, 3, ... in order,
// each record's hash matching its content and its "prev" the previous record's hash.
// The chain alone can't see its last records deleted (a cut at a line boundary is still a
// valid chain); with an anchor (the head the registry database stored in its last COMMIT)
// the file must still hold the anchored record, with the anchored hash. With the registry's
// audit journal (its rows for this log's node, in seq order) every record the file shares
// with the journal must be the journaled one, and a file that ends before the anchor (its
// node stopped before the file was synced; kmsd appends the rest at its next start) is
// intact if the journal's rows continue its chain up to the anchored record.
// verify_segments() does the same over the segments of a rotated log (audit_segment.h):
// ordered by their segment numbers, each header continuing the previous segment's last
// record, no number missing or twice, a rotated segment's name matching its number.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "kms/audit.h"

namespace kms::audit {

struct VerifyResult {
  bool ok = true;
  std::uint64_t records = 0;      // records that verified before the first problem
  std::uint64_t broken_line = 0;  // 1-based line number (in `file`) of the first broken record
  std::string problem;            // what is wrong with it
  std::string head_hash;          // hash of the last good record (kGenesisHash if none)
  std::uint64_t last_seq = 0;
  bool anchor_missing = false;  // the chain is intact but lacks the anchored record
  // The records after the file's last one, up to the anchor, found in the journal.
  std::uint64_t journal_records = 0;
  // verify_segments only:
  std::string file;              // the file of broken_line, or the file a problem names
  bool segments_broken = false;  // a segment missing, twice, renamed, or not continuing
  bool unreadable = false;       // a file could not be read (problem says which)
};

VerifyResult verify_chain(std::istream& in, const std::optional<AuditHead>& anchor = {},
                          const std::vector<AuditJournalLine>& journal = {});
VerifyResult verify_file(const std::string& path, const std::optional<AuditHead>& anchor = {},
                         const std::vector<AuditJournalLine>& journal = {});

// One verified segment, for the report (and an archive's manifest).
struct SegmentReport {
  std::string file;
  std::uint64_t number = 0;
  std::uint64_t first_seq = 0;  // its first record (the header, for segments > 1)
  std::uint64_t last_seq = 0;
  std::string last_hash;  // the head an archive of segments up to this one ends at
};

// The audit segments among a directory's files (those whose first bytes are a record);
// `skipped` gets the others (e.g. compressed archives, the database).
std::vector<std::string> segment_files_in(const std::string& directory,
                                          std::vector<std::string>* skipped = nullptr);

// Verifies `files` (in any order) as consecutive segments of one chain. Without from_head
// the oldest must be segment 1 (the chain's start); with it (the last hash of the newest
// segment archived away) the oldest must continue from that hash. An empty file is left out
// (`empty` gets it). The anchor must lie in the verified range.
VerifyResult verify_segments(const std::vector<std::string>& files,
                             const std::optional<AuditHead>& anchor = {},
                             const std::optional<std::string>& from_head = {},
                             std::vector<SegmentReport>* report = nullptr,
                             std::vector<std::string>* empty = nullptr,
                             const std::vector<AuditJournalLine>& journal = {});

}  // namespace kms::audit
