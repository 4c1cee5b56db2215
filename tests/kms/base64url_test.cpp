// Strict base64url, server (kms_core) and client (kms_client) implementations.
#include "kms/client/base64url.h"

#include <gtest/gtest.h>

#include "kms/core/base64url.h"

namespace {

using kms::Bytes;
using kms::ErrorCode;
using kms::ProtocolError;

Bytes bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

ErrorCode decode_error(std::string_view text) {
  try {
    kms::base64url_decode(text, "field");
  } catch (const ProtocolError& error) {
    return error.code();
  }
  return ErrorCode::internal_error;
}

TEST(Base64Url, Rfc4648VectorsRoundTrip) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : cases) {
    EXPECT_EQ(kms::base64url_encode(bytes(plain)), encoded);
    EXPECT_EQ(kms::base64url_decode(encoded, "f"), bytes(plain));
    EXPECT_EQ(kms::client::base64url_encode(bytes(plain)), encoded);
    EXPECT_EQ(kms::client::base64url_decode(encoded), bytes(plain));
  }
}

TEST(Base64Url, UsesUrlAlphabet) {
  const Bytes data = {0xfb, 0xff, 0xbf};
  EXPECT_EQ(kms::base64url_encode(data), "-_-_");
  EXPECT_EQ(kms::base64url_decode("-_-_", "f"), data);
  EXPECT_EQ(kms::client::base64url_decode("-_-_"), data);
}

TEST(Base64Url, RejectsPaddingWhitespaceAndForeignCharacters) {
  for (std::string_view bad : {"Zg==", "Zm8=", "Zm 9v", "Zm9v\n", "Zm+v", "Zm/v", "Zm9v!"}) {
    EXPECT_EQ(decode_error(bad), ErrorCode::malformed_request) << bad;
    EXPECT_FALSE(kms::client::base64url_decode(bad).has_value()) << bad;
  }
}

TEST(Base64Url, RejectsImpossibleLengthAndNonCanonicalBits) {
  EXPECT_EQ(decode_error("Z"), ErrorCode::malformed_request);
  EXPECT_EQ(decode_error("Zh"), ErrorCode::malformed_request);   // "f" is Zg; h sets unused bits
  EXPECT_EQ(decode_error("Zm9"), ErrorCode::malformed_request);  // "fo" is Zm8
  EXPECT_FALSE(kms::client::base64url_decode("Zh").has_value());
  EXPECT_FALSE(kms::client::base64url_decode("Zm9vY").has_value());
}

TEST(Base64Url, RejectsMoreThanTheLimit) {
  const std::string long_text(2000, 'A');
  EXPECT_NO_THROW(kms::base64url_decode(long_text, "f", 1500));
  EXPECT_EQ(decode_error(std::string(8000, 'A')), ErrorCode::malformed_request);
  try {
    kms::base64url_decode(long_text, "chair_envelope", 1000);
    FAIL();
  } catch (const ProtocolError& error) {
    EXPECT_NE(std::string(error.what()).find("chair_envelope"), std::string::npos);
  }
}

TEST(Base64Url, RandomRoundTrips) {
  std::srand(7);
  for (int n = 0; n < 200; ++n) {
    Bytes data(static_cast<std::size_t>(std::rand() % 70));
    for (auto& b : data) b = static_cast<std::uint8_t>(std::rand());
    const std::string text = kms::base64url_encode(data);
    EXPECT_EQ(text, kms::client::base64url_encode(data));
    EXPECT_EQ(kms::base64url_decode(text, "f"), data);
  }
}

}  // namespace
