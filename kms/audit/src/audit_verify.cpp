#include "kms/audit/audit_verify.h"

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>

#include "kms/audit/audit_record.h"
#include "kms/audit/audit_segment.h"

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

// Walks the records of `in` on from the chain state in `result` (last_seq, head_hash).
// With `segment` (verify_segments), line 1 must be its header (segments > 1) or the chain's
// first record, and no other line may be a header. Returns false at the first problem.
struct SegmentExpectation {
  std::uint64_t number = 0;
  bool header = false;
};

const AuditJournalLine* journal_row(const std::vector<AuditJournalLine>& journal,
                                    std::uint64_t seq) {
  const auto found = std::lower_bound(
      journal.begin(), journal.end(), seq,
      [](const AuditJournalLine& row, std::uint64_t wanted) { return row.seq < wanted; });
  return found != journal.end() && found->seq == seq ? &*found : nullptr;
}

bool walk_lines(std::istream& in, VerifyResult& result, const std::optional<AuditHead>& anchor,
                const SegmentExpectation* segment, const std::vector<AuditJournalLine>& journal) {
  std::string line;
  std::uint64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const bool complete = !in.eof();  // getline hit a newline
    std::string hash;
    std::string problem = check_line(line, result.last_seq + 1, result.head_hash, hash);
    if (segment && problem.empty()) {
      const std::optional<SegmentStart> start = parse_segment_start(line);
      const bool is_header = start && start->header;
      if (line_number == 1 && segment->header &&
          (!is_header || start->number != segment->number ||
           start->previous.seq + 1 != start->seq || start->previous.hash != start->prev)) {
        problem = "the segment header's fields do not match its record (segment " +
                  std::to_string(segment->number) + ")";
      } else if (line_number > 1 && is_header) {
        problem = "a segment header inside a segment (records of another segment inserted?)";
      }
    } else if (segment && line_number == 1 && result.last_seq > 0 && line_hash(line).ok()) {
      // The first record of a later segment: say which link between segments broke.
      const std::optional<SegmentStart> start = parse_segment_start(line);
      if (start && start->header &&
          (start->seq != result.last_seq + 1 || start->prev != result.head_hash)) {
        problem = "segment " + std::to_string(segment->number) +
                  " does not continue the segment before it: that one ends at seq " +
                  std::to_string(result.last_seq) + " (hash " + result.head_hash +
                  "), this header continues from seq " + std::to_string(start->seq - 1) +
                  " (hash " + start->prev +
                  "): records missing or altered at the end of the segment before";
      }
    }
    if (problem.empty() && !complete) problem = "last line has no newline (torn write)";
    if (!problem.empty()) {
      result.ok = false;
      result.broken_line = line_number;
      result.problem = problem;
      return false;
    }
    // A record the registry journaled with a committed batch must be that record.
    if (const AuditJournalLine* row = journal_row(journal, result.last_seq + 1);
        row && row->hash != hash) {
      result.ok = false;
      result.broken_line = line_number;
      result.problem = "record " + std::to_string(row->seq) + " is not the one the registry " +
                       "journaled (hash " + row->hash + "): the log was rewritten";
      return false;
    }
    ++result.records;
    ++result.last_seq;
    result.head_hash = hash;
    if (anchor && result.last_seq == anchor->seq && hash != anchor->hash) {
      result.ok = false;
      result.anchor_missing = true;
      result.problem =
          anchor_problem(*anchor, "record " + std::to_string(anchor->seq) + " has hash " + hash);
      return false;
    }
  }
  return true;
}

// The file may end before the anchor when the node stopped (kill -9, power loss) before its
// file was synced: the registry's journal then holds the rest, which must continue the
// file's chain up to the anchored record (kmsd appends it at its next start).
void check_anchor_reached(VerifyResult& result, const std::optional<AuditHead>& anchor,
                          const std::vector<AuditJournalLine>& journal) {
  if (result.ok && anchor && result.last_seq < anchor->seq) {
    std::uint64_t seq = result.last_seq;
    std::string head = result.head_hash;
    std::string problem;
    while (seq < anchor->seq) {
      const AuditJournalLine* row = journal_row(journal, seq + 1);
      if (!row) break;
      std::string hash;
      problem = check_line(row->line, seq + 1, head, hash);
      if (problem.empty() && hash != row->hash) problem = "its hash column differs";
      if (!problem.empty()) break;
      ++seq;
      head = hash;
    }
    if (problem.empty() && seq == anchor->seq && head == anchor->hash) {
      result.journal_records = seq - result.last_seq;
      return;
    }
    if (seq > result.last_seq || !problem.empty()) {
      result.ok = false;
      result.anchor_missing = true;
      result.problem = anchor_problem(
          *anchor, "the log ends at seq " + std::to_string(result.last_seq) +
                       "; the registry's journal continues it to seq " + std::to_string(seq) +
                       (problem.empty() ? std::string()
                                        : ", then its row " + std::to_string(seq + 1) +
                                              " is broken: " + problem));
      return;
    }
    result.ok = false;
    result.anchor_missing = true;
    result.problem =
        anchor_problem(*anchor, "the log ends at seq " + std::to_string(result.last_seq));
  }
}

std::string file_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

}  // namespace

VerifyResult verify_chain(std::istream& in, const std::optional<AuditHead>& anchor,
                          const std::vector<AuditJournalLine>& journal) {
  VerifyResult result;
  result.head_hash = std::string(kGenesisHash);
  if (walk_lines(in, result, anchor, nullptr, journal)) {
    check_anchor_reached(result, anchor, journal);
  }
  return result;
}

VerifyResult verify_file(const std::string& path, const std::optional<AuditHead>& anchor,
                         const std::vector<AuditJournalLine>& journal) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    VerifyResult result;
    result.ok = false;
    result.unreadable = true;
    result.file = path;
    result.problem = "cannot open " + path;
    return result;
  }
  VerifyResult result = verify_chain(in, anchor, journal);
  result.file = path;
  return result;
}

std::vector<std::string> segment_files_in(const std::string& directory,
                                          std::vector<std::string>* skipped) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string path = entry.path().string();
    std::ifstream in(path, std::ios::binary);
    char start[7] = {};
    in.read(start, sizeof start);
    if (in.gcount() == sizeof start && std::string_view(start, sizeof start) == "{\"seq\":") {
      files.push_back(path);
    } else if (skipped) {
      skipped->push_back(path);
    }
  }
  std::sort(files.begin(), files.end());
  if (skipped) std::sort(skipped->begin(), skipped->end());
  return files;
}

VerifyResult verify_segments(const std::vector<std::string>& files,
                             const std::optional<AuditHead>& anchor,
                             const std::optional<std::string>& from_head,
                             std::vector<SegmentReport>* report, std::vector<std::string>* empty,
                             const std::vector<AuditJournalLine>& journal) {
  VerifyResult result;
  result.head_hash = std::string(kGenesisHash);
  const auto fail = [&](const std::string& file, std::string problem, bool segments = true) {
    result.ok = false;
    result.file = file;
    result.problem = std::move(problem);
    result.segments_broken = segments;
    result.unreadable = !segments;
    return result;
  };
  struct Segment {
    std::string file;
    SegmentStart start;
  };
  std::vector<Segment> segments;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return fail(file, "cannot open " + file, false);
    std::string first;
    if (!std::getline(in, first) && first.empty()) {
      if (empty) empty->push_back(file);
      continue;
    }
    const std::optional<SegmentStart> start = parse_segment_start(first);
    if (!start) {
      result.broken_line = 1;
      return fail(file,
                  "not the start of a segment: neither an audit_segment header nor the "
                  "chain's first record (seq 1, prev 64 zeros); damaged, or not an audit log");
    }
    segments.push_back({file, *start});
  }
  if (segments.empty()) return fail("", "no audit records in the files given", false);
  std::stable_sort(segments.begin(), segments.end(), [](const Segment& a, const Segment& b) {
    return a.start.number < b.start.number;
  });
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const Segment& segment = segments[i];
    const auto named = segment_number_in_name(file_name(segment.file));
    if (named && *named != segment.start.number) {
      return fail(segment.file, "holds segment " + std::to_string(segment.start.number) +
                                    " but its name says segment " + std::to_string(*named) +
                                    " (segments renamed or swapped)");
    }
    if (i == 0) continue;
    const Segment& before = segments[i - 1];
    if (segment.start.number == before.start.number) {
      return fail(segment.file, "holds segment " + std::to_string(segment.start.number) + ", as " +
                                    before.file + " does (a segment twice)");
    }
    if (segment.start.number != before.start.number + 1) {
      const std::uint64_t from = before.start.number + 1, to = segment.start.number - 1;
      return fail(segment.file, (from == to ? "segment " + std::to_string(from) + " is missing"
                                            : "segments " + std::to_string(from) + " to " +
                                                  std::to_string(to) + " are missing") +
                                    ": " + before.file + " (segment " +
                                    std::to_string(before.start.number) + ") is followed by " +
                                    segment.file + " (segment " +
                                    std::to_string(segment.start.number) + ")");
    }
  }
  const Segment& oldest = segments.front();
  if (from_head) {
    if (oldest.start.prev != *from_head) {
      result.broken_line = 1;
      return fail(oldest.file, "segment " + std::to_string(oldest.start.number) +
                                   " does not continue from --from-head " + *from_head +
                                   " (it continues from seq " +
                                   std::to_string(oldest.start.seq - 1) + ", hash " +
                                   oldest.start.prev + ")");
    }
    result.last_seq = oldest.start.seq - 1;
    result.head_hash = *from_head;
  } else if (oldest.start.number != 1) {
    return fail(oldest.file,
                "the oldest segment given is segment " + std::to_string(oldest.start.number) +
                    ": segments 1 to " + std::to_string(oldest.start.number - 1) +
                    " are missing (archived? verify the rest with --from-head HASH, the last "
                    "hash of segment " +
                    std::to_string(oldest.start.number - 1) + ")");
  }
  const std::uint64_t first_seq = result.last_seq + 1;
  for (const Segment& segment : segments) {
    std::ifstream in(segment.file, std::ios::binary);
    if (!in) return fail(segment.file, "cannot open " + segment.file, false);
    const SegmentExpectation expectation{segment.start.number, segment.start.header};
    const std::uint64_t before = result.last_seq;
    if (!walk_lines(in, result, anchor, &expectation, journal)) {
      result.file = segment.file;
      return result;
    }
    if (report) {
      report->push_back(
          {segment.file, segment.start.number, before + 1, result.last_seq, result.head_hash});
    }
  }
  if (anchor && anchor->seq > 0 && anchor->seq < first_seq) {
    result.ok = false;
    result.anchor_missing = true;
    result.problem = "anchored seq " + std::to_string(anchor->seq) + " (hash " + anchor->hash +
                     ") is before the segments given (they start at seq " +
                     std::to_string(first_seq) + "): include the segment that holds it";
    return result;
  }
  check_anchor_reached(result, anchor, journal);
  if (!result.ok) result.file = segments.back().file;
  return result;
}

}  // namespace kms::audit
