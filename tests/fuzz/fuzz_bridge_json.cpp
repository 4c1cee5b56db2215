// POST /v1/bridge/keys bodies (kmsd's decoder, kms/server/src/wire.cpp) and the release a
// bridge receives, decoded and opened by kms_client's BridgeClient with the vector bridge
// key BK_Y (docs/PROTOCOL.md "Test vectors"). A body decodes or is a typed ProtocolError; a
// release opens or is a typed ClientError. Anything else is a bug.
#include <boost/json.hpp>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kms/client/bridge_client.h"
#include "kms/client/client_error.h"
#include "kms/server/wire.h"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

kms::client::Bytes counting(std::uint8_t first, std::size_t count) {
  kms::client::Bytes out(count);
  for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<std::uint8_t>(first + i);
  return out;
}

void bridge_request(std::string_view body) {
  try {
    const auto request = kms::wire::bridge_request_from_json(body);
    const auto again = kms::wire::bridge_request_from_json(
        kms::wire::bridge_request_to_json(request.conference_id, request.bridge_key_version));
    require(again.conference_id == request.conference_id &&
            again.bridge_key_version == request.bridge_key_version);
  } catch (const kms::ProtocolError&) {
  }
}

// The decoded numbers are the body's numbers (not, say, taken modulo 256): read the body
// again with Boost.JSON's tree parser and compare.
void numbers_as_in_the_body(std::string_view body, const kms::BridgeRelease& release) {
  const auto object = boost::json::parse(body).as_object();
  require(object.at("profile").as_int64() == release.profile);
  const auto& keys = object.at("keys").as_array();
  require(keys.size() == release.keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    require(keys[i].as_object().at("role").as_int64() == release.keys[i].role);
    require(keys[i].as_object().at("suite").as_int64() == release.keys[i].suite);
  }
}

void open_release(const kms::BridgeRelease& release) {
  static const kms::client::Bytes bridge_key = counting(0x80, 32);
  const auto profile = kms::client::profile_from_id(release.profile);
  if (!profile) return;  // the bridge refuses a release of an unknown profile
  const kms::client::BridgeClient bridge("sip:bridge1@conf.example.net", bridge_key, *profile);
  std::vector<kms::client::BridgeItem> items;
  for (const kms::ReleasedKey& key : release.keys) {
    items.push_back({key.member_id, key.role, key.key_id, key.suite, key.wrapped});
  }
  try {
    const auto keys = bridge.open_release(release.conference_id, release.bridge_key_version, items);
    require(keys.size() == items.size());
  } catch (const kms::client::ClientError&) {
  }
}

void bridge_release(std::string_view body) {
  kms::BridgeRelease release;
  try {
    release = kms::wire::bridge_release_from_json(body);
  } catch (const kms::ProtocolError&) {
    return;
  }
  const auto again =
      kms::wire::bridge_release_from_json(kms::wire::bridge_release_to_json(release));
  require(again.conference_id == release.conference_id && again.profile == release.profile &&
          again.expires_at == release.expires_at &&
          again.bridge_key_version == release.bridge_key_version &&
          again.keys.size() == release.keys.size());
  for (std::size_t i = 0; i < release.keys.size(); ++i) {
    require(again.keys[i].member_id == release.keys[i].member_id &&
            again.keys[i].role == release.keys[i].role &&
            again.keys[i].key_id == release.keys[i].key_id &&
            again.keys[i].suite == release.keys[i].suite &&
            again.keys[i].wrapped == release.keys[i].wrapped);
  }
  numbers_as_in_the_body(body, release);
  open_release(release);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  bridge_request(body);
  bridge_release(body);
  return 0;
}
