#include "kms/audit/audit_record.h"

#include <openssl/evp.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace kms::audit {

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw AuditUnavailable("audit: SHA-256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0x0f]);
  }
  return hex;
}

std::string format_record(std::uint64_t seq, std::string_view time, std::string_view prev_hash,
                          const AuditEvent& event) {
  boost::json::object fields;
  for (const auto& [name, value] : event.fields) fields[name] = value;  // std::map: sorted
  std::string line = "{\"seq\":" + std::to_string(seq);
  line += ",\"time\":" + boost::json::serialize(boost::json::string(time));
  line += ",\"prev\":" + boost::json::serialize(boost::json::string(prev_hash));
  line += ",\"event\":" + boost::json::serialize(boost::json::string(event.event));
  line += ",\"outcome\":" + boost::json::serialize(boost::json::string(event.outcome));
  line += ",\"fields\":" + boost::json::serialize(fields);
  const std::string hash = sha256_hex(line);
  line += kHashMarker;
  line += hash;
  line += "\"}";
  return line;
}

std::string utc_now_rfc3339() {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::time_point_cast<std::chrono::seconds>(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now - seconds).count();
  const std::time_t t = std::chrono::system_clock::to_time_t(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buffer;
}

LineHash line_hash(std::string_view line) {
  LineHash result;
  const auto marker = line.rfind(kHashMarker);
  if (marker == std::string_view::npos) return result;
  const std::string_view tail = line.substr(marker + kHashMarker.size());
  if (tail.size() != 64 + 2 || tail.substr(64) != "\"}") return result;
  result.claimed = std::string(tail.substr(0, 64));
  result.computed = sha256_hex(line.substr(0, marker));
  return result;
}

}  // namespace kms::audit
