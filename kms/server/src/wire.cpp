#include "kms/server/wire.h"

#include <boost/json.hpp>
#include <limits>
#include <set>

#include "kms/core/base64url.h"

namespace kms::wire {
namespace {

namespace json = boost::json;

[[noreturn]] void malformed(std::string detail) {
  throw ProtocolError(ErrorCode::malformed_request, std::move(detail));
}

json::object parse_object(std::string_view body, const std::set<std::string_view>& allowed) {
  json::error_code ec;
  json::parse_options options;
  options.max_depth = 8;
  json::value value = json::parse(body, ec, {}, options);
  if (ec) malformed("body is not valid JSON: " + ec.message());
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

}  // namespace

// The codec is kms_core's (kms/core/base64url.h); these keep the wire API's shape.
std::string base64url_encode(const Bytes& data) { return kms::base64url_encode(data); }

std::optional<Bytes> base64url_decode(std::string_view text) {
  try {
    return kms::base64url_decode(text, "value", std::numeric_limits<std::size_t>::max());
  } catch (const ProtocolError&) {
    return std::nullopt;
  }
}

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
  request.chair_id = string_field(object, "chair_id", kMaxIdentityBytes);
  request.responder_id = string_field(object, "responder_id", kMaxIdentityBytes);
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

std::string bridge_request_to_json(const Bytes& conference_id) {
  json::object object;
  object["conference_id"] = base64url_encode(conference_id);
  return json::serialize(object);
}

Bytes bridge_request_from_json(std::string_view body) {
  const json::object object = parse_object(body, {"conference_id"});
  Bytes id = binary_field(object, "conference_id", kConferenceIdBytes);
  if (id.size() != kConferenceIdBytes) malformed("conference_id is not 16 bytes");
  return id;
}

std::string bridge_release_to_json(const BridgeRelease& release) {
  json::object object;
  object["conference_id"] = base64url_encode(release.conference_id);
  object["profile"] = release.profile;
  object["expires_at"] = release.expires_at;
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
      parse_object(body, {"conference_id", "profile", "expires_at", "keys"});
  BridgeRelease release;
  release.conference_id = binary_field(object, "conference_id", kConferenceIdBytes);
  release.profile = static_cast<std::uint8_t>(integer_field(object, "profile"));
  release.expires_at = integer_field(object, "expires_at");
  const json::value* keys = object.if_contains("keys");
  if (!keys || !keys->is_array()) malformed("field \"keys\" is not an array");
  for (const json::value& entry : keys->as_array()) {
    if (!entry.is_object()) malformed("a key item is not an object");
    const json::object& item = entry.as_object();
    ReleasedKey key;
    key.member_id = string_field(item, "member_id", kMaxIdentityBytes);
    key.role = static_cast<std::uint8_t>(integer_field(item, "role"));
    key.key_id = binary_field(item, "key_id", 64);
    key.suite = static_cast<std::uint8_t>(integer_field(item, "suite"));
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
