// kms-audit: checks the hash chain of kmsd's audit log, one file or the segments of a
// rotated log (docs/SERVER.md "Audit log", docs/OPERATIONS.md "Audit log: rotation,
// retention, archival").
//   kms-audit verify PATH... [--anchor-db DB | --config kmsd.toml] [--from-head HASH] [-q]
//     PATH: the log, its segments (any order), or a directory holding them
//     exit 0 if the chain is intact (and holds the record anchored in DB), 1 at the first
//     broken record, a segment missing, twice, renamed or not continuing the one before,
//     or when the anchored record is missing or different, 2 unreadable (or a usage
//     error: unknown option, missing argument). With DB the registry's audit journal is
//     read too: a log that ends before the anchor (its node stopped before the file was
//     synced) is intact if the journal continues it to the anchor (reported: kmsd appends
//     those records at its next start), and a record the journal holds must be that record.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

#include "audit_anchor_db.h"
#include "kms/audit/audit_segment.h"
#include "kms/audit/audit_verify.h"
#include "kms/node_name.h"
#include "kms/version.h"
#include "tokens/token_config.h"

namespace {

constexpr int kBroken = 1;
constexpr int kUsage = 2;

bool is_hash(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// A single log file from before rotation (no segment header on its first line): verified
// exactly as it always was.
bool is_unsegmented_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string first;
  if (!in || !std::getline(in, first)) return true;  // verify_file reports it as before
  const auto start = kms::audit::parse_segment_start(first);
  return !start || !start->header;
}

namespace fs = std::filesystem;

// A path as kmsd names its log in the journal (absolute, lexically normal), and resolved.
bool same_path(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return a == b || fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
}

// The journal rows of the log being verified: the log named by a PATH given, else the one
// log in a directory given (the live file's segments are beside it).
std::vector<kms::AuditJournalLine> journal_of(
    const std::map<std::string, std::vector<kms::AuditJournalLine>>& journals,
    const std::vector<std::string>& paths) {
  for (const bool by_directory : {false, true}) {
    for (const std::string& path : paths) {
      std::error_code ec;
      const bool directory = fs::is_directory(path, ec);
      if (directory != by_directory) continue;
      const fs::path given = directory ? (fs::absolute(path) / "").lexically_normal().parent_path()
                                       : fs::absolute(path).lexically_normal();
      for (const auto& [log, rows] : journals) {
        const fs::path named(log);
        if (same_path(directory ? named.parent_path() : named, given)) return rows;
      }
    }
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kms-audit: inspect and verify kmsd's hash-chained audit log"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kms-audit " KMS_VERSION);
  std::vector<std::string> paths;
  std::string anchor_db;
  std::string config_file;
  std::string from_head;
  std::string node = kms::default_node_name();
  bool quiet = false;
  auto* verify = app.add_subcommand(
      "verify",
      "Check every record's hash, its sequence number and its link to the previous "
      "record, across the segments of a rotated log (ordered by their segment numbers: a "
      "segment missing, twice, renamed or not continuing the one before is reported); "
      "report the first broken record (file and line). Exit 0 intact, 1 broken, "
      "2 unreadable.");
  verify
      ->add_option("PATH", paths,
                   "the audit log (JSON lines), its segments in any order "
                   "(audit.log.000001 ... audit.log), or a directory holding them")
      ->required();
  verify->add_option("--anchor-db", anchor_db,
                     "kmsd's registry database: the log must still hold the record (seq and "
                     "hash) anchored there by the last committed admission or release, or the "
                     "database's audit journal must continue the log up to it (the node "
                     "stopped before its file was synced); detects deleted last records, "
                     "which the chain alone cannot");
  verify
      ->add_option("--config", config_file,
                   "kmsd's configuration file: --anchor-db is its database, found as kmsd and "
                   "kms-provision find it ([database] path, KMS_DATABASE)")
      ->check(CLI::ExistingFile)
      ->excludes("--anchor-db");
  verify
      ->add_option("--from-head", from_head,
                   "verify a retained range: the oldest segment given must continue from this "
                   "hash (the last hash of the newest segment archived away), instead of "
                   "being segment 1")
      ->check([](const std::string& value) {
        return is_hash(value) ? std::string() : "not a hash (64 lowercase hex digits)";
      });
  verify
      ->add_option("--node", node,
                   "the node whose log this is, among nodes sharing one PostgreSQL database "
                   "(its [server] node_name; default: this host's name, as kmsd's). An SQLite "
                   "database holds one anchor, which ignores it; its audit journal is per node "
                   "as on PostgreSQL")
      ->capture_default_str()
      ->check([](const std::string& value) {
        return kms::valid_node_name(value) ? std::string()
                                           : "1 to 64 characters of A-Z a-z 0-9 . _ -";
      });
  verify->add_flag("-q,--quiet", quiet, "print nothing on success");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // app.exit prints the problem (or the help); CLI11's own codes are not kms-audit's.
    return app.exit(error) == 0 ? 0 : kUsage;
  }

  if (!config_file.empty()) {
    try {
      anchor_db = tokens::load_token_config(std::filesystem::path(config_file)).database;
    } catch (const tokens::ConfigError& error) {
      std::cerr << "kms-audit: " << error.what() << "\n";
      return kUsage;
    }
  }

  std::optional<kms::AuditHead> anchor;
  std::map<std::string, std::vector<kms::AuditJournalLine>> journals;
  if (!anchor_db.empty()) {
    try {
      anchor = kms::tools::read_audit_anchor(anchor_db, node);
      journals = kms::tools::read_audit_journal(anchor_db, node);
    } catch (const kms::tools::AnchorDbError& error) {
      std::cerr << "kms-audit: " << error.what() << "\n";
      return kUsage;
    }
  }

  std::vector<std::string> files;
  std::vector<std::string> notes;
  for (const std::string& path : paths) {
    std::error_code ec;
    if (!std::filesystem::is_directory(path, ec)) {
      files.push_back(path);
      continue;
    }
    std::vector<std::string> skipped;
    const auto found = kms::audit::segment_files_in(path, &skipped);
    if (found.empty()) {
      std::cerr << "kms-audit: no audit segments in the directory " << path << "\n";
      return kUsage;
    }
    files.insert(files.end(), found.begin(), found.end());
    for (const auto& file : skipped) notes.push_back("skipped " + file + " (not an audit segment)");
  }

  const std::vector<kms::AuditJournalLine> journal = journal_of(journals, paths);
  const bool single_file =
      files.size() == 1 && from_head.empty() && is_unsegmented_file(files.front());
  std::vector<kms::audit::SegmentReport> report;
  std::vector<std::string> empty;
  const kms::audit::VerifyResult result =
      single_file ? kms::audit::verify_file(files.front(), anchor, journal)
                  : kms::audit::verify_segments(
                        files, anchor, from_head.empty() ? std::nullopt : std::optional(from_head),
                        &report, &empty, journal);
  for (const auto& file : empty) notes.push_back("skipped " + file + " (empty)");
  if (result.ok) {
    if (!quiet) {
      for (const auto& note : notes) std::cout << "note: " << note << "\n";
      if (single_file) {
        std::cout << "ok: " << files.front() << ": " << result.records << " records, last seq "
                  << result.last_seq << ", head " << result.head_hash << "\n";
      } else {
        for (const auto& segment : report) {
          std::cout << "segment " << segment.number << ": " << segment.file << ": seq "
                    << segment.first_seq << ".." << segment.last_seq << ", last hash "
                    << segment.last_hash << "\n";
        }
        std::cout << "ok: " << report.size() << " segment" << (report.size() == 1 ? "" : "s")
                  << ", " << result.records << " records, last seq " << result.last_seq << ", head "
                  << result.head_hash << "\n";
      }
      if (anchor && result.journal_records > 0) {
        std::cout << "ok: anchored seq " << anchor->seq << " (" << anchor_db
                  << ") is in the registry's audit journal: the log lags it by "
                  << result.journal_records << " record" << (result.journal_records == 1 ? "" : "s")
                  << " (seq " << result.last_seq + 1 << ".." << anchor->seq
                  << "), which continue its chain; kmsd appends them at its next start\n";
      } else if (anchor) {
        std::cout << "ok: anchored seq " << anchor->seq << " (" << anchor_db
                  << ") present and unchanged\n";
      } else if (!anchor_db.empty()) {
        std::cout << "note: " << anchor_db << " holds no audit anchor yet (nothing committed)\n";
      }
    }
    return 0;
  }
  if (result.unreadable ||
      (result.broken_line == 0 && !result.anchor_missing && !result.segments_broken)) {
    std::cerr << "kms-audit: " << result.problem << "\n";
    return kUsage;
  }
  std::cout << "BROKEN: " << result.file << ": ";
  if (result.broken_line > 0 && !result.anchor_missing) {
    std::cout << "line " << result.broken_line << ": " << result.problem << " (" << result.records
              << " records verified before it)\n";
  } else {
    std::cout << result.problem << "\n";
  }
  return kBroken;
}
