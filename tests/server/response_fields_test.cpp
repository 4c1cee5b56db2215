// The JSON of kmsd's success responses against the field names and types that
// docs/PROTOCOL.md ("HTTP binding") and docs/SERVER.md ("Endpoints") write, as string
// literals here, parsed with boost::json directly: not through kms::wire, which the server
// itself uses (a field renamed in kms::wire would pass every test that reads it back with
// kms::wire). A real key request and a real bridge release on a real kmsd (SoftHSM).
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kms/client/bridge_client.h"
#include "kms/client/ue_client.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "tls_test_client.h"

namespace {

using namespace kmstest;
namespace client = kms::client;
namespace json = boost::json;
using Bytes = std::vector<std::uint8_t>;

// base64url without padding (RFC 4648 section 5), written here rather than taken from
// kms::wire so that the test does not share the server's codec.
constexpr const char* kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string b64u(const Bytes& data) {
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const std::uint8_t byte : data) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(buffer >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (6 - bits)) & 63];
  return out;
}

std::optional<Bytes> from_b64u(const std::string& text) {
  Bytes out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const char* at = std::find(kAlphabet, kAlphabet + 64, c);
    if (at == kAlphabet + 64) return std::nullopt;  // also rejects '=' padding
    buffer = (buffer << 6) | static_cast<std::uint32_t>(at - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>(buffer >> bits));
    }
  }
  if (text.size() % 4 == 1) return std::nullopt;
  return out;
}

// Header lookup by name, case-insensitively (HTTP field names are).
std::string header(const RawResponse& response, const std::string& name) {
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string headers = lower(response.headers);
  const std::string needle = "\n" + lower(name) + ":";
  const auto at = headers.find(needle);
  if (at == std::string::npos) return {};
  auto begin = at + needle.size();
  const auto end = response.headers.find("\r\n", begin);
  while (begin < end && response.headers[begin] == ' ') ++begin;
  return response.headers.substr(begin, end - begin);
}

std::set<std::string> field_names(const json::object& object) {
  std::set<std::string> names;
  for (const auto& field : object) names.insert(std::string(field.key()));
  return names;
}

// The field's string, decoded as base64url; fails the test if it is not one.
Bytes binary_field(const json::object& object, const char* name) {
  const json::value* value = object.if_contains(name);
  if (!value || !value->is_string()) {
    ADD_FAILURE() << name << " is not a JSON string";
    return {};
  }
  const std::string text(value->as_string());
  auto bytes = from_b64u(text);
  if (!bytes) {
    ADD_FAILURE() << name << " is not base64url without padding: " << text;
    return {};
  }
  EXPECT_EQ(b64u(*bytes), text) << name << " is not canonical base64url";
  return *bytes;
}

// The field's integer; fails the test if it is not a JSON integer (a double or a string).
std::int64_t integer_field(const json::object& object, const char* name) {
  const json::value* value = object.if_contains(name);
  if (value && value->is_int64()) return value->as_int64();
  if (value && value->is_uint64()) return static_cast<std::int64_t>(value->as_uint64());
  ADD_FAILURE() << name << " is not a JSON integer";
  return -1;
}

std::string string_field(const json::object& object, const char* name) {
  const json::value* value = object.if_contains(name);
  if (value && value->is_string()) return std::string(value->as_string());
  ADD_FAILURE() << name << " is not a JSON string";
  return {};
}

// Every success body: 200, JSON with the headers docs/SERVER.md promises on every response.
json::object success_object(const RawResponse& response) {
  EXPECT_EQ(response.status, 200u) << response.body;
  EXPECT_NE(header(response, "Content-Type").find("application/json"), std::string::npos)
      << response.headers;
  EXPECT_EQ(header(response, "Cache-Control"), "no-store") << response.headers;
  EXPECT_FALSE(header(response, "X-Request-Id").empty()) << response.headers;
  boost::system::error_code error;
  json::value body = json::parse(response.body, error);
  if (error || !body.is_object()) {
    ADD_FAILURE() << "not a JSON object: " << response.body;
    return {};
  }
  return body.as_object();
}

class ResponseFieldsTest : public SharedKmsdTest<ResponseFieldsTest> {
 protected:
  // POST /v1/key-request with the documented request field names; returns the raw answer.
  static RawResponse post_key_request(const client::Secret& r_a, const std::string& invitee,
                                      const client::Secret& r_b) {
    const kms::KeyRequest request = key_request(*environment_, kAlice, r_a, invitee, r_b);
    const json::object body = {{"chair_id", request.chair_id},
                               {"responder_id", request.responder_id},
                               {"chair_envelope", b64u(request.chair_envelope)},
                               {"responder_envelope", b64u(request.responder_envelope)}};
    return https_request(kmsd_->port(), environment_->pki().server_ca, "POST", "/v1/key-request",
                         "application/json", json::serialize(body));
  }

  // The documented profile id of the deployment's profile name (PROTOCOL.md "Profiles").
  static std::int64_t profile_id() { return environment_->profile() == "sp800-108-cmac" ? 2 : 1; }
};

// 200 {"conference_id": b64u, "chair_response": b64u, "responder_response": b64u}
TEST_F(ResponseFieldsTest, KeyRequestSuccessHasExactlyTheDocumentedFields) {
  const client::Secret r_a = client::UeClient::make_nonce();
  const client::Secret r_b = client::UeClient::make_nonce();
  const json::object body = success_object(post_key_request(r_a, kBob, r_b));
  EXPECT_EQ(field_names(body),
            (std::set<std::string>{"conference_id", "chair_response", "responder_response"}));

  const Bytes conference_id = binary_field(body, "conference_id");
  const Bytes chair_response = binary_field(body, "chair_response");
  const Bytes responder_response = binary_field(body, "responder_response");
  ASSERT_EQ(conference_id.size(), 16u);
  ASSERT_EQ(chair_response.size(), 70u);
  ASSERT_EQ(responder_response.size(), 70u);
  // Each field holds what its name says: the chair's response (type 0x11) opens for A, the
  // responder's (type 0x12) for B, both under the conference_id beside them.
  EXPECT_EQ(chair_response[1], 0x11);
  EXPECT_EQ(responder_response[1], 0x12);
  const client::MediaKey chair_key =
      ue_client(*environment_, kAlice).open_chair_response(chair_response, r_a, kBob, kSuite);
  const client::MediaKey member_key =
      ue_client(*environment_, kBob)
          .open_responder_response(responder_response, r_b, kAlice, kSuite, conference_id);
  EXPECT_EQ(chair_key.conference_id, conference_id);
  EXPECT_EQ(member_key.conference_id, conference_id);
}

// 200 {"conference_id": b64u, "profile": n, "expires_at": unix-seconds, "bridge_key_version": n,
//      "keys": [{"member_id": ID, "role": 1|2, "key_id": b64u, "suite": n, "wrapped": b64u}]}
TEST_F(ResponseFieldsTest, BridgeReleaseSuccessHasExactlyTheDocumentedFields) {
  const client::Secret r_a = client::UeClient::make_nonce();
  const client::Secret r_b = client::UeClient::make_nonce();
  const client::Secret r_c = client::UeClient::make_nonce();
  const auto before = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  // A invites B, then C; the UE side keeps what each party opened.
  std::map<std::string, client::MediaKey> ue_keys;
  Bytes conference_id;
  const std::vector<std::pair<std::string, const client::Secret*>> invitees = {{kBob, &r_b},
                                                                               {kCarol, &r_c}};
  for (const auto& [invitee, r_n] : invitees) {
    const json::object body = success_object(post_key_request(r_a, invitee, *r_n));
    conference_id = binary_field(body, "conference_id");
    ue_keys[kAlice] =
        ue_client(*environment_, kAlice)
            .open_chair_response(binary_field(body, "chair_response"), r_a, invitee, kSuite);
    ue_keys[invitee] = ue_client(*environment_, invitee)
                           .open_responder_response(binary_field(body, "responder_response"), *r_n,
                                                    kAlice, kSuite, conference_id);
  }
  const auto after = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();

  const json::object request = {{"conference_id", b64u(conference_id)}};
  const TestPki& pki = environment_->pki();
  const json::object body = success_object(
      https_request(kmsd_->port(), pki.server_ca, "POST", "/v1/bridge/keys", "application/json",
                    json::serialize(request), pki.bridge.cert, pki.bridge.key));
  EXPECT_EQ(field_names(body), (std::set<std::string>{"conference_id", "profile", "expires_at",
                                                      "bridge_key_version", "keys"}));
  EXPECT_EQ(binary_field(body, "conference_id"), conference_id);
  EXPECT_EQ(integer_field(body, "profile"), profile_id());
  // The version of the bridge key the items are wrapped under: the bridge's first (u32).
  EXPECT_EQ(integer_field(body, "bridge_key_version"), 1);
  // The conference's expiry: its first admission + conference_ttl_s (default 86400).
  const std::int64_t expires_at = integer_field(body, "expires_at");
  EXPECT_GE(expires_at, before + 86400);
  EXPECT_LE(expires_at, after + 86400);

  const json::value* keys = body.if_contains("keys");
  ASSERT_TRUE(keys && keys->is_array()) << "keys is not a JSON array";
  ASSERT_EQ(keys->as_array().size(), 3u);
  const client::BridgeClient bridge(kBridgeId, environment_->root_key(kBridgeId),
                                    profile_of(environment_->profile()));
  // Chair first (role 1), then the members in order of admission (role 2).
  const std::vector<std::pair<std::string, std::int64_t>> expected_items = {
      {kAlice, 1}, {kBob, 2}, {kCarol, 2}};
  for (std::size_t i = 0; i < expected_items.size(); ++i) {
    const auto& [member, role] = expected_items[i];
    SCOPED_TRACE(member);
    const json::value& item_value = keys->as_array()[i];
    ASSERT_TRUE(item_value.is_object()) << "keys[" << i << "] is not a JSON object";
    const json::object& item = item_value.as_object();
    EXPECT_EQ(field_names(item),
              (std::set<std::string>{"member_id", "role", "key_id", "suite", "wrapped"}));
    EXPECT_EQ(string_field(item, "member_id"), member);
    EXPECT_EQ(integer_field(item, "role"), role);
    EXPECT_EQ(integer_field(item, "suite"), 1);  // AES_CM_128_HMAC_SHA1_80
    const Bytes key_id = binary_field(item, "key_id");
    const Bytes wrapped = binary_field(item, "wrapped");
    EXPECT_EQ(key_id, ue_keys.at(member).key_id);
    ASSERT_EQ(wrapped.size(), 40u);
    // The wrapped key is the member's: the bridge opens it to the key the UE received.
    const client::MediaKey opened =
        bridge.open(conference_id, {member, static_cast<std::uint8_t>(role), key_id, 1, wrapped});
    EXPECT_TRUE(client::equal_constant_time(opened.key, ue_keys.at(member).key));
  }
}

}  // namespace
