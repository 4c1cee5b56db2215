// The HTTP API's JSON wire format: strict base64url and strict request parsing.
#include "kms/server/wire.h"

#include <gtest/gtest.h>

#include <limits>

#include "kms/core/base64url.h"
#include "kms/server/content_type.h"
#include "kms/server/http_status.h"

namespace {

using kms::Bytes;
using kms::ErrorCode;
using kms::ProtocolError;
namespace wire = kms::wire;

// The server's one base64url codec (kms/core/base64url.h), as a yes/no for the tables below.
std::string b64u_encode(const Bytes& data) { return kms::base64url_encode(data); }
std::optional<Bytes> b64u_decode(std::string_view text) {
  try {
    return kms::base64url_decode(text, "value", std::numeric_limits<std::size_t>::max());
  } catch (const ProtocolError&) {
    return std::nullopt;
  }
}

TEST(Base64Url, RoundTripsEveryLength) {
  for (std::size_t n = 0; n < 40; ++n) {
    Bytes data(n);
    for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<std::uint8_t>(i * 37 + 11);
    const std::string text = b64u_encode(data);
    EXPECT_EQ(text.find('='), std::string::npos);
    EXPECT_EQ(b64u_decode(text), data) << text;
  }
  EXPECT_EQ(b64u_encode({0xfb, 0xff}), "-_8");
}

TEST(Base64Url, RejectsPaddingWhitespaceForeignAlphabetAndNonCanonicalBits) {
  for (const char* bad : {"AA==", "A", "AA A", "AA+/", "AA\n", "AB", "AAB"}) {
    EXPECT_FALSE(b64u_decode(bad).has_value()) << bad;
  }
  EXPECT_TRUE(b64u_decode("AA").has_value());
  EXPECT_TRUE(b64u_decode("AAA").has_value());
}

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ProtocolError& error) {
    return error.code();
  }
  return ErrorCode::internal_error;
}

TEST(KeyRequestJson, RoundTrips) {
  const kms::KeyRequest request{"sip:a@x", "sip:b@x", Bytes(80, 1), Bytes(81, 2)};
  const auto parsed = wire::key_request_from_json(wire::key_request_to_json(request));
  EXPECT_EQ(parsed.chair_id, request.chair_id);
  EXPECT_EQ(parsed.responder_id, request.responder_id);
  EXPECT_EQ(parsed.chair_envelope, request.chair_envelope);
  EXPECT_EQ(parsed.responder_envelope, request.responder_envelope);
}

TEST(KeyRequestJson, EveryMalformedBodyIsMalformedRequest) {
  const std::vector<std::string> bodies = {
      "",
      "{",
      "null",
      "[]",
      R"({"chair_id":"sip:a@x"})",
      R"({"chair_id":1,"responder_id":"b","chair_envelope":"AA","responder_envelope":"AA"})",
      R"({"chair_id":"a","responder_id":"b","chair_envelope":"AA=","responder_envelope":"AA"})",
      R"({"chair_id":"a","responder_id":"b","chair_envelope":"AA","responder_envelope":"AA","x":0})",
      R"({"chair_id":null,"responder_id":"b","chair_envelope":"AA","responder_envelope":"AA"})",
      R"({"chair_id":"a","responder_id":"b","chair_envelope":")" + std::string(2000, 'A') +
          R"(","responder_envelope":"AA"})",
      std::string(100, '[') + std::string(100, ']'),
  };
  for (const auto& body : bodies) {
    EXPECT_EQ(code_of([&] { (void)wire::key_request_from_json(body); }),
              ErrorCode::malformed_request)
        << body.substr(0, 80);
  }
}

// An identity that is a JSON string is the services' to judge (invalid_identity,
// docs/PROTOCOL.md step 1), whatever its length: the wire format keeps it byte for byte.
TEST(KeyRequestJson, IdentityFieldsNeedOnlyBeStrings) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},
      {std::string(257, 'a'), std::string(257, 'a')},
      {"bob", "bob"},
      {R"(sip:a@x\u0000)", std::string("sip:a@x\0", 8)},  // JSON escape of a NUL byte
  };
  for (const auto& [json_text, id] : cases) {
    const std::string body = R"({"chair_id":")" + json_text +
                             R"(","responder_id":"sip:b@x","chair_envelope":"AA",)"
                             R"("responder_envelope":"AA"})";
    kms::KeyRequest parsed;
    ASSERT_NO_THROW(parsed = wire::key_request_from_json(body)) << body.substr(0, 60);
    EXPECT_EQ(parsed.chair_id, id);
    EXPECT_EQ(parsed.responder_id, "sip:b@x");
  }
}

// boost::json's tree parser keeps the last of two equal keys; another parser may keep the
// first. Every body with a key twice in one object, at any depth and however it is
// escaped, is refused (docs/SERVER.md "Endpoints").
TEST(Json, ADuplicateKeyAtAnyLevelIsMalformedRequest) {
  const std::string request =
      R"("responder_id":"sip:b@x","chair_envelope":"AA","responder_envelope":"AA")";
  const std::vector<std::string> key_requests = {
      R"({"chair_id":"sip:a@x","chair_id":"sip:c@x",)" + request + "}",
      R"({"chair_id":"sip:a@x",)" + request + R"(,"chair_id":"sip:a@x"})",
      R"({"chair_id":"sip:a@x","chair\u005fid":"sip:c@x",)" + request + "}",
      R"({"chair_id":"sip:a@x",)" + request + R"(,"responder_envelope":"AA"})",
  };
  for (const std::string& body : key_requests) {
    try {
      (void)wire::key_request_from_json(body);
      ADD_FAILURE() << "accepted " << body;
    } catch (const ProtocolError& error) {
      EXPECT_EQ(error.code(), ErrorCode::malformed_request) << body;
      EXPECT_NE(error.detail().find("duplicate key"), std::string::npos) << error.detail();
    }
  }
  const std::string id = b64u_encode(Bytes(16, 7));
  EXPECT_EQ(code_of([&] {
              (void)wire::bridge_request_from_json(R"({"conference_id":")" + id +
                                                   R"(","conference_id":")" + id + R"("})");
            }),
            ErrorCode::malformed_request);
  EXPECT_EQ(code_of([&] {
              (void)wire::bridge_request_from_json(R"({"conference_id":")" + id +
                                                   R"(","bridge_key_version":1,)"
                                                   R"("bridge_key_version":2})");
            }),
            ErrorCode::malformed_request);
  // Inside an object inside an array: a released item with member_id twice.
  kms::BridgeRelease release;
  release.conference_id = Bytes(16, 3);
  release.profile = 1;
  release.bridge_key_version = 1;
  release.keys.push_back({"sip:a@x", 1, Bytes(8, 4), 1, Bytes(40, 5)});
  std::string body = wire::bridge_release_to_json(release);
  ASSERT_NO_THROW((void)wire::bridge_release_from_json(body));
  const auto at = body.find(R"("member_id":)");
  ASSERT_NE(at, std::string::npos);
  body.insert(at, R"("member_id":"sip:b@x",)");
  EXPECT_EQ(code_of([&] { (void)wire::bridge_release_from_json(body); }),
            ErrorCode::malformed_request)
      << body;
  // Equal keys in different objects are not duplicates.
  release.keys.push_back({"sip:b@x", 2, Bytes(8, 6), 1, Bytes(40, 7)});
  EXPECT_EQ(wire::bridge_release_from_json(wire::bridge_release_to_json(release)).keys.size(), 2u);
}

TEST(BridgeJson, RequestNeedsASixteenByteConferenceId) {
  const Bytes id(16, 7);
  EXPECT_EQ(wire::bridge_request_from_json(wire::bridge_request_to_json(id)).conference_id, id);
  EXPECT_FALSE(wire::bridge_request_from_json(wire::bridge_request_to_json(id)).bridge_key_version);
  EXPECT_EQ(code_of([] { (void)wire::bridge_request_from_json(R"({"conference_id":"AAAA"})"); }),
            ErrorCode::malformed_request);
}

// "bridge_key_version" (optional): the bridge key version the bridge holds, 1 .. 2^32 - 1.
TEST(BridgeJson, RequestMayNameTheBridgeKeyVersion) {
  const Bytes id(16, 7);
  for (const std::uint32_t version : {1u, 2u, 4294967295u}) {
    const auto parsed = wire::bridge_request_from_json(wire::bridge_request_to_json(id, version));
    EXPECT_EQ(parsed.conference_id, id);
    EXPECT_EQ(parsed.bridge_key_version, version);
  }
  const std::string prefix =
      R"({"conference_id":")" + b64u_encode(id) + R"(","bridge_key_version":)";
  for (const char* bad : {"0", "-1", "4294967296", "\"1\"", "1.5", "null", "true"}) {
    EXPECT_EQ(code_of([&] { (void)wire::bridge_request_from_json(prefix + bad + "}"); }),
              ErrorCode::malformed_request)
        << bad;
  }
}

TEST(BridgeJson, ReleaseRoundTrips) {
  kms::BridgeRelease release;
  release.conference_id = Bytes(16, 3);
  release.profile = 1;
  release.expires_at = 1'800'000'000;
  release.bridge_key_version = 3;
  release.keys.push_back({"sip:a@x", 1, Bytes(8, 4), 1, Bytes(40, 5)});
  release.keys.push_back({"sip:b@x", 2, Bytes(8, 6), 1, Bytes(40, 7)});
  const auto parsed = wire::bridge_release_from_json(wire::bridge_release_to_json(release));
  EXPECT_EQ(parsed.conference_id, release.conference_id);
  EXPECT_EQ(parsed.expires_at, release.expires_at);
  EXPECT_EQ(parsed.bridge_key_version, 3u);
  ASSERT_EQ(parsed.keys.size(), 2u);
  EXPECT_EQ(parsed.keys[1].member_id, "sip:b@x");
  EXPECT_EQ(parsed.keys[1].role, 2);
  EXPECT_EQ(parsed.keys[1].wrapped, release.keys[1].wrapped);
}

// profile, role and suite are one byte each (docs/PROTOCOL.md): a value beyond 0 .. 255 is
// malformed, not taken modulo 256 (role 257 would otherwise open as a chair's key, found by
// tests/fuzz/fuzz_bridge_json's re-encoding check).
TEST(BridgeJson, ReleaseRefusesProfileRoleAndSuiteOutsideOneByte) {
  kms::BridgeRelease release;
  release.conference_id = Bytes(16, 3);
  release.profile = 1;
  release.bridge_key_version = 1;
  release.keys.push_back({"sip:a@x", 1, Bytes(8, 4), 1, Bytes(40, 5)});
  const std::string body = wire::bridge_release_to_json(release);
  ASSERT_NO_THROW((void)wire::bridge_release_from_json(body));
  for (const char* field : {R"("profile":1)", R"("role":1)", R"("suite":1)"}) {
    for (const char* bad : {"257", "256", "-255", "-1"}) {
      std::string changed = body;
      const auto at = changed.find(field);
      ASSERT_NE(at, std::string::npos) << field;
      const std::string name = std::string(field).substr(0, std::string(field).find(':') + 1);
      changed.replace(at, std::string(field).size(), name + bad);
      EXPECT_EQ(code_of([&] { (void)wire::bridge_release_from_json(changed); }),
                ErrorCode::malformed_request)
          << changed;
    }
  }
}

TEST(ErrorJson, CarriesCodeAndDetail) {
  const auto body = wire::error_from_json(wire::error_to_json("replay", "seen \"before\""));
  ASSERT_TRUE(body.has_value());
  EXPECT_EQ(body->error, "replay");
  EXPECT_EQ(body->detail, "seen \"before\"");
}

// docs/SERVER.md "Endpoints": application/json in any case, parameters allowed (RFC 9110
// syntax), charset only utf-8 (JSON is UTF-8, RFC 8259); anything else is 415.
TEST(ContentType, ApplicationJsonWithAUtf8CharsetOrNone) {
  using kms::server::json_content_type_problem;
  for (const char* accepted :
       {"application/json", "Application/JSON", " application/json ", "application/json;",
        "application/json; charset=utf-8", "application/json;charset=UTF-8",
        "application/json ; charset=\"utf-8\"", "application/json; CHARSET=Utf-8",
        "application/json; profile=x; charset=utf-8", "application/json; foo=\"a;b\""}) {
    EXPECT_EQ(json_content_type_problem(accepted), std::nullopt) << accepted;
  }
  for (const char* refused :
       {"", "text/plain", "text/json", "application/jsonx", "application/json-seq",
        "application/ json", "application /json", "application/json x",
        "application/json; charset=iso-8859-1", "application/json; charset=utf-16",
        "application/json; charset=\"utf-16le\"", "application/json; charset=utf8",
        "application/json; charset=", "application/json; charset", "application/json; =utf-8",
        "application/json; charset=\"utf-8", "application/json; charset=utf-8 x",
        "application/json, text/plain"}) {
    EXPECT_NE(json_content_type_problem(refused), std::nullopt) << refused;
  }
}

TEST(HttpStatus, StableMapping) {
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::malformed_request), 400u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::envelope_authentication_failed), 403u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::bridge_not_authorized), 403u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::unknown_conference), 404u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::replay), 409u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::conference_expired), 410u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::audit_unavailable), 503u);
  EXPECT_EQ(kms::server::http_status_for(ErrorCode::internal_error), 500u);
}

}  // namespace
