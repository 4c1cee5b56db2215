#include "kms/audit/audit_segment.h"

#include <boost/json.hpp>
#include <charconv>
#include <cstdio>

#include "kms/audit/audit_record.h"

namespace kms::audit {
namespace {

std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

const boost::json::string* string_field(const boost::json::object& object, std::string_view key) {
  const auto* value = object.if_contains(key);
  return value && value->is_string() ? &value->as_string() : nullptr;
}

}  // namespace

std::string segment_path(const std::string& live_path, std::uint64_t number) {
  char digits[32];
  std::snprintf(digits, sizeof digits, "%0*llu", static_cast<int>(kSegmentDigits),
                static_cast<unsigned long long>(number));
  return live_path + "." + digits;
}

std::optional<std::uint64_t> segment_number_in_name(std::string_view file_name) {
  const auto dot = file_name.rfind('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::string_view digits = file_name.substr(dot + 1);
  if (digits.size() < kSegmentDigits) return std::nullopt;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return parse_number(digits);
}

AuditEvent segment_header_event(std::uint64_t number, const AuditHead& previous,
                                std::string_view reason) {
  return {std::string(kSegmentEvent),
          "ok",
          {{"segment", std::to_string(number)},
           {"previous_last_seq", std::to_string(previous.seq)},
           {"previous_last_hash", previous.hash},
           {"reason", std::string(reason)}}};
}

std::optional<SegmentStart> parse_segment_start(std::string_view line) {
  boost::system::error_code ec;
  const boost::json::value value = boost::json::parse(line, ec);
  if (ec || !value.is_object()) return std::nullopt;
  const auto& record = value.as_object();
  const auto* seq = record.if_contains("seq");
  const auto* prev = string_field(record, "prev");
  const auto* event = string_field(record, "event");
  const auto* time = string_field(record, "time");
  if (!seq || !seq->is_int64() || seq->as_int64() < 1 || !prev || !event || !time) {
    return std::nullopt;
  }
  SegmentStart start;
  start.seq = static_cast<std::uint64_t>(seq->as_int64());
  start.prev = std::string(*prev);
  start.time = std::string(*time);
  if (*event == kSegmentEvent) {
    const auto* fields = record.if_contains("fields");
    if (!fields || !fields->is_object()) return std::nullopt;
    const auto* number = string_field(fields->as_object(), "segment");
    const auto* last_seq = string_field(fields->as_object(), "previous_last_seq");
    const auto* last_hash = string_field(fields->as_object(), "previous_last_hash");
    if (!number || !last_seq || !last_hash) return std::nullopt;
    const auto parsed_number = parse_number(*number);
    const auto parsed_seq = parse_number(*last_seq);
    if (!parsed_number || !parsed_seq) return std::nullopt;
    start.header = true;
    start.number = *parsed_number;
    start.previous = AuditHead{*parsed_seq, std::string(*last_hash)};
    return start;
  }
  if (start.seq == 1 && start.prev == kGenesisHash) {
    start.number = 1;
    return start;
  }
  return std::nullopt;
}

}  // namespace kms::audit
