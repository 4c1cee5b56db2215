// Bulk import files: identity + key wrapped under the transport key (hex or base64).
//   CSV   (.csv):  "identity,wrapped_key" per line; optional header line with those names;
//                  blank lines and lines starting with '#' ignored; RFC 4180 quotes allowed.
//   JSON  (.json): an array of {"identity": "...", "wrapped_key": "..."} (numbered by
//                  entry), or JSON Lines: one such object per line (numbered by line).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace provisioning {

struct BulkEntry {
  std::size_t number = 0;  // line (CSV, JSON Lines) or entry (JSON array), from 1
  std::string identity;
  std::string wrapped_key;  // still encoded
};

struct BulkProblem {
  std::size_t number = 0;
  std::string identity;  // when known
  std::string reason;
};

struct BulkFile {
  std::string unit = "line";  // what `number` counts: "line" or "entry"
  std::vector<BulkEntry> entries;
  std::vector<BulkProblem> problems;  // lines that could not even be parsed
};

// format: "csv", "json" or nullopt (from the extension; CSV when unknown).
// Throws FileError if the file cannot be read or is not JSON at all, UsageError for an
// unknown format.
BulkFile parse_bulk_file(const std::string& path, const std::optional<std::string>& format);
BulkFile parse_bulk_text(const std::string& text, const std::string& format);

}  // namespace provisioning
