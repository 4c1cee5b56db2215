#include "kms/server/wire.h"

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "kms/core/base64url.h"

namespace kms::wire {
namespace {

namespace json = boost::json;

[[noreturn]] void malformed(std::string detail) {
  throw ProtocolError(ErrorCode::malformed_request, std::move(detail));
}

constexpr std::size_t kMaxDepth = 8;

// A SAX handler that only looks for a key that occurs twice in one object (at any depth).
// boost::json's tree parser keeps the last of two equal keys, so {"a":1,"a":2} would be
// read as {"a":2} while another parser may read {"a":1}: a parser differential. Keys are
// compared after unescaping ("a" and "\u0061" are the same key).
class DuplicateKeyFinder {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  std::optional<std::string> duplicate;  // the first key found twice

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    objects_.emplace_back();
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    objects_.pop_back();
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t, json::error_code&) { return true; }
  bool on_key_part(json::string_view part, std::size_t, json::error_code&) {
    key_.append(part.data(), part.size());
    return true;
  }
  bool on_key(json::string_view part, std::size_t, json::error_code& ec) {
    key_.append(part.data(), part.size());
    // A key is always in the innermost open container, which is an object.
    if (!objects_.back().insert(key_).second) {
      duplicate = std::move(key_);
      ec = json::error::syntax;  // stops the parser; `duplicate` says why
      return false;
    }
    key_.clear();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  std::vector<std::set<std::string, std::less<>>> objects_;
  std::string key_;
};

// Throws malformed_request when any object in the body has a key twice.
void reject_duplicate_keys(std::string_view body) {
  json::parse_options options;
  options.max_depth = kMaxDepth;
  json::basic_parser<DuplicateKeyFinder> parser(options);
  json::error_code ec;
  parser.write_some(false, body.data(), body.size(), ec);
  if (const auto& duplicate = parser.handler().duplicate) {
    malformed("duplicate key \"" + duplicate->substr(0, 64) + "\"");
  }
  // Any other error is reported by the tree parser below, with its message.
}

json::object parse_object(std::string_view body, const std::set<std::string_view>& allowed) {
  json::error_code ec;
  json::parse_options options;
  options.max_depth = kMaxDepth;
  json::value value = json::parse(body, ec, {}, options);
  if (ec) malformed("body is not valid JSON: " + ec.message());
  reject_duplicate_keys(body);
  if (!value.is_object()) malformed("body is not a JSON object");
  json::object object = std::move(value.as_object());
  for (const auto& entry : object) {
    if (!allowed.contains(entry.key())) {
      malformed("unknown field \"" + std::string(entry.key().substr(0, 64)) + "\"");
    }
  }
  return object;
}

std::string string_field(const json::object& object, std::string_view name, std::size_t max) {
  const json::value* value = object.if_contains(name);
  if (!value) malformed("missing field \"" + std::string(name) + "\"");
  if (!value->is_string()) malformed("field \"" + std::string(name) + "\" is not a string");
  const json::string& text = value->as_string();
  if (text.empty() || text.size() > max) {
    malformed("field \"" + std::string(name) + "\" is empty or longer than " + std::to_string(max) +
              " bytes");
  }
  return std::string(text);
}

// An identity field: any JSON string. Whether it is an identity (length 1..256, the IMS
// identity rules) is step 1 of the key-request processing (invalid_identity), not a
// question of the JSON; the body size bounds its length.
std::string identity_field(const json::object& object, std::string_view name) {
  const json::value* value = object.if_contains(name);
  if (!value) malformed("missing field \"" + std::string(name) + "\"");
  if (!value->is_string()) malformed("field \"" + std::string(name) + "\" is not a string");
  return std::string(value->as_string());
}

Bytes binary_field(const json::object& object, std::string_view name, std::size_t max_bytes) {
  const std::string text = string_field(object, name, (max_bytes * 4 + 2) / 3);
  return kms::base64url_decode(text, name, max_bytes);  // ProtocolError naming the field
}

std::int64_t integer_field(const json::object& object, std::string_view name) {
  const json::value* value = object.if_contains(name);
  if (!value || !value->is_int64())
    malformed("field \"" + std::string(name) + "\" is not an integer");
  return value->as_int64();
}

// A one-byte field (profile, role, suite): an integer 0 .. 255, never taken modulo 256.
std::uint8_t u8_field(const json::object& object, std::string_view name) {
  const std::int64_t value = integer_field(object, name);
  if (value < 0 || value > std::numeric_limits<std::uint8_t>::max()) {
    malformed("field \"" + std::string(name) + "\" is not a byte (0 .. 255)");
  }
  return static_cast<std::uint8_t>(value);
}

// A key version: an integer 1 .. 2^32 - 1 (u32, as in the envelope header).
std::uint32_t key_version_field(const json::object& object, std::string_view name) {
  const std::int64_t value = integer_field(object, name);
  if (value < 1 || value > std::numeric_limits<std::uint32_t>::max()) {
    malformed("field \"" + std::string(name) + "\" is not a key version (1 .. 4294967295)");
  }
  return static_cast<std::uint32_t>(value);
}

}  // namespace

std::string key_request_to_json(const KeyRequest& request) {
  json::object object;
  object["chair_id"] = request.chair_id;
  object["responder_id"] = request.responder_id;
  object["chair_envelope"] = base64url_encode(request.chair_envelope);
  object["responder_envelope"] = base64url_encode(request.responder_envelope);
  return json::serialize(object);
}

KeyRequest key_request_from_json(std::string_view body) {
  const json::object object =
      parse_object(body, {"chair_id", "responder_id", "chair_envelope", "responder_envelope"});
  KeyRequest request;
  request.chair_id = identity_field(object, "chair_id");
  request.responder_id = identity_field(object, "responder_id");
  request.chair_envelope = binary_field(object, "chair_envelope", kMaxEnvelopeBytes);
  request.responder_envelope = binary_field(object, "responder_envelope", kMaxEnvelopeBytes);
  return request;
}

std::string key_response_to_json(const KeyResponse& response) {
  json::object object;
  object["conference_id"] = base64url_encode(response.conference_id);
  object["chair_response"] = base64url_encode(response.chair_response);
  object["responder_response"] = base64url_encode(response.responder_response);
  return json::serialize(object);
}

KeyResponse key_response_from_json(std::string_view body) {
  const json::object object =
      parse_object(body, {"conference_id", "chair_response", "responder_response"});
  KeyResponse response;
  response.conference_id = binary_field(object, "conference_id", kConferenceIdBytes);
  response.chair_response = binary_field(object, "chair_response", kMaxEnvelopeBytes);
  response.responder_response = binary_field(object, "responder_response", kMaxEnvelopeBytes);
  return response;
}

std::string bridge_request_to_json(const Bytes& conference_id,
                                   std::optional<std::uint32_t> bridge_key_version) {
  json::object object;
  object["conference_id"] = base64url_encode(conference_id);
  if (bridge_key_version) object["bridge_key_version"] = *bridge_key_version;
  return json::serialize(object);
}

BridgeKeyRequest bridge_request_from_json(std::string_view body) {
  const json::object object = parse_object(body, {"conference_id", "bridge_key_version"});
  BridgeKeyRequest request;
  request.conference_id = binary_field(object, "conference_id", kConferenceIdBytes);
  if (request.conference_id.size() != kConferenceIdBytes) {
    malformed("conference_id is not 16 bytes");
  }
  if (object.contains("bridge_key_version")) {
    request.bridge_key_version = key_version_field(object, "bridge_key_version");
  }
  return request;
}

std::string bridge_release_to_json(const BridgeRelease& release) {
  json::object object;
  object["conference_id"] = base64url_encode(release.conference_id);
  object["profile"] = release.profile;
  object["expires_at"] = release.expires_at;
  object["bridge_key_version"] = release.bridge_key_version;
  json::array keys;
  for (const ReleasedKey& key : release.keys) {
    json::object item;
    item["member_id"] = key.member_id;
    item["role"] = key.role;
    item["key_id"] = base64url_encode(key.key_id);
    item["suite"] = key.suite;
    item["wrapped"] = base64url_encode(key.wrapped);
    keys.push_back(std::move(item));
  }
  object["keys"] = std::move(keys);
  return json::serialize(object);
}

BridgeRelease bridge_release_from_json(std::string_view body) {
  const json::object object =
      parse_object(body, {"conference_id", "profile", "expires_at", "bridge_key_version", "keys"});
  BridgeRelease release;
  release.conference_id = binary_field(object, "conference_id", kConferenceIdBytes);
  release.profile = u8_field(object, "profile");
  release.expires_at = integer_field(object, "expires_at");
  release.bridge_key_version = key_version_field(object, "bridge_key_version");
  const json::value* keys = object.if_contains("keys");
  if (!keys || !keys->is_array()) malformed("field \"keys\" is not an array");
  for (const json::value& entry : keys->as_array()) {
    if (!entry.is_object()) malformed("a key item is not an object");
    const json::object& item = entry.as_object();
    ReleasedKey key;
    key.member_id = string_field(item, "member_id", kMaxIdentityBytes);
    key.role = u8_field(item, "role");
    key.key_id = binary_field(item, "key_id", 64);
    key.suite = u8_field(item, "suite");
    key.wrapped = binary_field(item, "wrapped", 256);
    release.keys.push_back(std::move(key));
  }
  return release;
}

std::string error_to_json(std::string_view code, std::string_view detail) {
  json::object object;
  object["error"] = code;
  object["detail"] = detail;
  return json::serialize(object);
}

std::optional<ErrorBody> error_from_json(std::string_view body) {
  json::error_code ec;
  const json::value value = json::parse(body, ec);
  if (ec || !value.is_object()) return std::nullopt;
  const json::object& object = value.as_object();
  const json::value* error = object.if_contains("error");
  if (!error || !error->is_string()) return std::nullopt;
  ErrorBody result{std::string(error->as_string()), {}};
  if (const json::value* detail = object.if_contains("detail"); detail && detail->is_string()) {
    result.detail = std::string(detail->as_string());
  }
  return result;
}

}  // namespace kms::wire
