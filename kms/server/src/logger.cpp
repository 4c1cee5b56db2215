#include "kms/server/logger.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>

#include "kms/audit/audit_record.h"

namespace kms::server {
namespace {

using audit::utf8_sequence_length;

// The code point of the UTF-8 sequence of `length` bytes at text[at] (1 or 2 bytes; longer
// ones are never control characters, so any value >= 0x800 does for them).
unsigned code_point(std::string_view text, std::size_t at, std::size_t length) {
  const auto lead = static_cast<unsigned char>(text[at]);
  if (length == 1) return lead;
  if (length == 2)
    return ((lead & 0x1fu) << 6) | (static_cast<unsigned char>(text[at + 1]) & 0x3fu);
  return 0x800;
}

bool is_control(unsigned code) { return code < 0x20 || (code >= 0x7f && code < 0xa0); }

// A JSON string: '"' and '\\' escaped, every control character (C0, DEL, C1) as \u00XX, and
// each byte that is not UTF-8 as U+FFFD, so the line is one valid JSON object of plain text.
void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_sequence_length(text, i);
    if (length == 0) {
      out += "\xef\xbf\xbd";
      ++i;
      continue;
    }
    const unsigned code = code_point(text, i, length);
    if (code == '"' || code == '\\') {
      out += '\\';
      out += static_cast<char>(code);
    } else if (is_control(code)) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", code);
      out += escaped;
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  out += '"';
}

// logfmt: a value with anything but printable ASCII other than '"', '=' and '\\' is quoted;
// inside the quotes '"' and '\\' are escaped with a backslash, and the bytes of control
// characters (C0, DEL, C1) and bytes that are not UTF-8 as \xNN, so the line is one line of
// plain text.
std::string kv_value(std::string_view value) {
  bool plain = !value.empty();
  for (char c : value) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) >= 0x7f) {
      plain = false;
    }
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size();) {
    const std::size_t length = utf8_sequence_length(value, i);
    if (length == 0 || is_control(code_point(value, i, length))) {
      for (std::size_t k = 0; k < std::max<std::size_t>(length, 1); ++k) {
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(value[i + k]));
        out += escaped;
      }
      i += std::max<std::size_t>(length, 1);
      continue;
    }
    if (value[i] == '"' || value[i] == '\\') out += '\\';
    out.append(value.substr(i, length));
    i += length;
  }
  return out + "\"";
}

}  // namespace

std::string_view journal_priority_prefix(LogLevel level) {
  switch (level) {
    case LogLevel::error:
      return "<3>";
    case LogLevel::warn:
      return "<4>";
    case LogLevel::info:
      return "<6>";
    case LogLevel::debug:
      return "<7>";
  }
  return "<6>";
}

bool is_journal_stream(int fd, const char* journal_stream) {
  if (journal_stream == nullptr) return false;
  const std::string_view text(journal_stream);
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return false;
  const auto number = [](std::string_view digits, unsigned long long& value) {
    value = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return false;
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    return true;
  };
  unsigned long long device = 0;
  unsigned long long inode = 0;
  if (!number(text.substr(0, colon), device) || !number(text.substr(colon + 1), inode)) {
    return false;
  }
  struct stat status {};
  if (::fstat(fd, &status) != 0) return false;
  return static_cast<unsigned long long>(status.st_dev) == device &&
         static_cast<unsigned long long>(status.st_ino) == inode;
}

void Logger::log(LogLevel level, std::string_view message, const LogFields& fields) {
  if (!enabled(level)) return;
  std::string line(journal_priority_ ? journal_priority_prefix(level) : std::string_view());
  const std::string time = audit::utc_now_rfc3339();
  if (format_ == LogFormat::json) {
    line += "{";
    std::vector<std::string_view> keys;
    const auto add = [&](std::string_view key, std::string_view value) {
      if (std::find(keys.begin(), keys.end(), key) != keys.end()) return;  // first one wins
      keys.push_back(key);
      if (line.back() != '{') line += ',';
      append_json_string(line, key);
      line += ':';
      append_json_string(line, value);
    };
    add("time", time);
    add("level", log_level_name(level));
    add("msg", message);
    for (const auto& [key, value] : fields) add(key, value);
    line += '}';
  } else {
    line += "time=" + time + " level=" + std::string(log_level_name(level)) +
            " msg=" + kv_value(message);
    for (const auto& [key, value] : fields) line += " " + key + "=" + kv_value(value);
  }
  line += '\n';
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace kms::server
