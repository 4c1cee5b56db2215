#include "kms/server/logger.h"

#include <boost/json.hpp>
#include <cstdio>

#include "kms/audit/audit_record.h"

namespace kms::server {
namespace {

std::string kv_value(std::string_view value) {
  bool plain = !value.empty();
  for (char c : value) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) >= 0x7f) {
      plain = false;
    }
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
      out += hex;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

void Logger::log(LogLevel level, std::string_view message, const LogFields& fields) {
  if (!enabled(level)) return;
  std::string line;
  const std::string time = audit::utc_now_rfc3339();
  if (format_ == LogFormat::json) {
    boost::json::object object;
    object["time"] = time;
    object["level"] = log_level_name(level);
    object["msg"] = message;
    for (const auto& [key, value] : fields) object[key] = value;
    line = boost::json::serialize(object);
  } else {
    line = "time=" + time + " level=" + std::string(log_level_name(level)) +
           " msg=" + kv_value(message);
    for (const auto& [key, value] : fields) line += " " + key + "=" + kv_value(value);
  }
  line += '\n';
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace kms::server
