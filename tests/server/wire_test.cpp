// The HTTP API's JSON wire format: strict base64url and strict request parsing.
#include "kms/server/wire.h"

#include <gtest/gtest.h>

#include "kms/server/server.h"

namespace {

using kms::Bytes;
using kms::ErrorCode;
using kms::ProtocolError;
namespace wire = kms::wire;

TEST(Base64Url, RoundTripsEveryLength) {
  for (std::size_t n = 0; n < 40; ++n) {
    Bytes data(n);
    for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<std::uint8_t>(i * 37 + 11);
    const std::string text = wire::base64url_encode(data);
    EXPECT_EQ(text.find('='), std::string::npos);
    EXPECT_EQ(wire::base64url_decode(text), data) << text;
  }
  EXPECT_EQ(wire::base64url_encode({0xfb, 0xff}), "-_8");
}

TEST(Base64Url, RejectsPaddingWhitespaceForeignAlphabetAndNonCanonicalBits) {
  for (const char* bad : {"AA==", "A", "AA A", "AA+/", "AA\n", "AB", "AAB"}) {
    EXPECT_FALSE(wire::base64url_decode(bad).has_value()) << bad;
  }
  EXPECT_TRUE(wire::base64url_decode("AA").has_value());
  EXPECT_TRUE(wire::base64url_decode("AAA").has_value());
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
      R"({"chair_id":"","responder_id":"b","chair_envelope":"AA","responder_envelope":"AA"})",
      R"({"chair_id":")" + std::string(300, 'a') +
          R"(","responder_id":"b","chair_envelope":"AA","responder_envelope":"AA"})",
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

TEST(BridgeJson, RequestNeedsASixteenByteConferenceId) {
  const Bytes id(16, 7);
  EXPECT_EQ(wire::bridge_request_from_json(wire::bridge_request_to_json(id)), id);
  EXPECT_EQ(code_of([] { (void)wire::bridge_request_from_json(R"({"conference_id":"AAAA"})"); }),
            ErrorCode::malformed_request);
}

TEST(BridgeJson, ReleaseRoundTrips) {
  kms::BridgeRelease release;
  release.conference_id = Bytes(16, 3);
  release.profile = 1;
  release.expires_at = 1'800'000'000;
  release.keys.push_back({"sip:a@x", 1, Bytes(8, 4), 1, Bytes(40, 5)});
  release.keys.push_back({"sip:b@x", 2, Bytes(8, 6), 1, Bytes(40, 7)});
  const auto parsed = wire::bridge_release_from_json(wire::bridge_release_to_json(release));
  EXPECT_EQ(parsed.conference_id, release.conference_id);
  EXPECT_EQ(parsed.expires_at, release.expires_at);
  ASSERT_EQ(parsed.keys.size(), 2u);
  EXPECT_EQ(parsed.keys[1].member_id, "sip:b@x");
  EXPECT_EQ(parsed.keys[1].role, 2);
  EXPECT_EQ(parsed.keys[1].wrapped, release.keys[1].wrapped);
}

TEST(ErrorJson, CarriesCodeAndDetail) {
  const auto body = wire::error_from_json(wire::error_to_json("replay", "seen \"before\""));
  ASSERT_TRUE(body.has_value());
  EXPECT_EQ(body->error, "replay");
  EXPECT_EQ(body->detail, "seen \"before\"");
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
