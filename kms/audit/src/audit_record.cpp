#include "kms/audit/audit_record.h"

#include <openssl/evp.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "kms/hex.h"

namespace kms::audit {

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw AuditUnavailable("audit: SHA-256 failed");
  }
  return to_hex({digest, length});
}

std::size_t utf8_sequence_length(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xbf;  // the second byte's range: no overlong form,
  if (lead >= 0xc2 && lead <= 0xdf) {     // no surrogate, nothing above U+10FFFF
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (at + length > text.size() || byte(1) < low || byte(1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return length;
}

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_sequence_length(text, i);
    if (length == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string format_record(std::uint64_t seq, std::string_view time, std::string_view prev_hash,
                          const AuditEvent& event) {
  boost::json::object fields;
  for (const auto& [name, value] : event.fields) {
    fields[valid_utf8(name)] = valid_utf8(value);  // std::map: sorted
  }
  std::string line = "{\"seq\":" + std::to_string(seq);
  line += ",\"time\":" + boost::json::serialize(boost::json::string(time));
  line += ",\"prev\":" + boost::json::serialize(boost::json::string(prev_hash));
  line += ",\"event\":" + boost::json::serialize(boost::json::string(valid_utf8(event.event)));
  line += ",\"outcome\":" + boost::json::serialize(boost::json::string(valid_utf8(event.outcome)));
  line += ",\"fields\":" + boost::json::serialize(fields);
  const std::string hash = sha256_hex(line);
  line += kHashMarker;
  line += hash;
  line += "\"}";
  return line;
}

std::string utc_now_rfc3339() { return utc_rfc3339(std::chrono::system_clock::now()); }

std::string utc_rfc3339(std::chrono::system_clock::time_point now) {
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
