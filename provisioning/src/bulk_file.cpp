#include "bulk_file.h"

#include <boost/json.hpp>
#include <string_view>

#include "encoding.h"
#include "errors.h"

namespace provisioning {
namespace {

std::string trim(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return {};
  const auto end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

// RFC 4180 fields of one line; nullopt on an unterminated quote.
std::optional<std::vector<std::string>> split_csv(const std::string& line) {
  std::vector<std::string> fields;
  std::string field;
  bool quoted = false;
  bool was_quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"' && trim(field).empty()) {
      quoted = was_quoted = true;
      field.clear();
    } else if (c == ',') {
      fields.push_back(was_quoted ? field : trim(field));
      field.clear();
      was_quoted = false;
    } else {
      field += c;
    }
  }
  if (quoted) return std::nullopt;
  fields.push_back(was_quoted ? field : trim(field));
  return fields;
}

// Calls line(text) for each line of `text` (without its '\n'), as std::getline would.
template <typename Line>
void for_each_line(std::string_view text, Line&& line) {
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    line(std::string(text.substr(0, end)));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

BulkFile parse_csv(const std::string& text) {
  BulkFile file;
  std::size_t number = 0;
  bool first = true;
  // Over the text itself: no copy of a file that may be 100 MB or more.
  for_each_line(text, [&](std::string line) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string content = trim(line);
    if (content.empty() || content.front() == '#') return;
    auto fields = split_csv(line);
    if (first) {
      first = false;
      if (fields && fields->size() == 2 && (*fields)[0] == "identity" &&
          (*fields)[1] == "wrapped_key") {
        return;
      }
    }
    if (!fields) {
      file.problems.push_back({number, {}, "unterminated quote"});
    } else if (fields->size() != 2) {
      file.problems.push_back(
          {number, fields->empty() ? "" : (*fields)[0],
           "expected 2 fields (identity,wrapped_key), found " + std::to_string(fields->size())});
    } else {
      file.entries.push_back({number, (*fields)[0], (*fields)[1]});
    }
  });
  return file;
}

void parse_json_object(const boost::json::value& value, std::size_t number, BulkFile& file) {
  const auto* object = value.if_object();
  if (object == nullptr) {
    file.problems.push_back({number, {}, "not a JSON object"});
    return;
  }
  const auto* identity = object->if_contains("identity");
  const auto* wrapped = object->if_contains("wrapped_key");
  std::string id = identity && identity->is_string() ? std::string(identity->get_string()) : "";
  if (identity == nullptr || !identity->is_string()) {
    file.problems.push_back({number, id, "missing string field \"identity\""});
  } else if (wrapped == nullptr || !wrapped->is_string()) {
    file.problems.push_back({number, id, "missing string field \"wrapped_key\""});
  } else {
    file.entries.push_back({number, id, std::string(wrapped->get_string())});
  }
}

BulkFile parse_json(const std::string& text) {
  BulkFile file;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    file.unit = "entry";
    boost::system::error_code error;
    boost::json::value document = boost::json::parse(text, error);
    if (error) throw FileError("bulk file is not valid JSON: " + error.message());
    std::size_t number = 0;
    for (const auto& item : document.as_array()) parse_json_object(item, ++number, file);
    return file;
  }
  std::size_t number = 0;
  for_each_line(text, [&](const std::string& line) {
    ++number;
    if (trim(line).empty()) return;
    boost::system::error_code error;
    boost::json::value value = boost::json::parse(line, error);
    if (error) {
      file.problems.push_back({number, {}, "invalid JSON: " + error.message()});
      return;
    }
    parse_json_object(value, number, file);
  });
  return file;
}

}  // namespace

BulkFile parse_bulk_text(const std::string& text, const std::string& format) {
  if (format == "json") return parse_json(text);
  if (format == "csv") return parse_csv(text);
  throw UsageError("unknown bulk format \"" + format + "\" (expected csv or json)");
}

BulkFile parse_bulk_file(const std::string& path, const std::optional<std::string>& format) {
  std::string chosen = format.value_or("");
  if (chosen.empty()) {
    chosen = (path.ends_with(".json") || path.ends_with(".jsonl")) ? "json" : "csv";
  }
  return parse_bulk_text(read_text_file(path), chosen);
}

}  // namespace provisioning
