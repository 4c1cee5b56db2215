// Strict envelope/response parsing: every malformed input is a typed ProtocolError.
#include <gtest/gtest.h>

#include "kms/client/envelope_builder.h"
#include "kms/core/envelope_codec.h"
#include "protocol_error_of.h"
#include "reference_kms.h"
#include "tokens/identity.h"

namespace {

using kms::Bytes;
using kms::ErrorCode;
using kms::ProtocolError;
namespace protocol = kms::protocol;

Bytes vector_value(const std::string& name) {
  static const kmstest::NamedValues values =
      kmstest::compute_vectors(kms::client::Profile::aes_ecb_sha256);
  return kmstest::value_of(values, name);
}

using kmstest::error_of;

TEST(EnvelopeCodec, ParsesTheClientsEnvelope) {
  const Bytes bytes = vector_value("E_A_for_B");
  const protocol::Envelope envelope = protocol::parse_envelope(bytes);
  EXPECT_EQ(envelope.version, 1);
  EXPECT_EQ(envelope.type, protocol::MessageType::chair_invite);
  EXPECT_EQ(envelope.profile, 1);
  EXPECT_EQ(envelope.suite, 1);
  EXPECT_EQ(envelope.key_version, 1u);
  EXPECT_EQ(envelope.timestamp, kmstest::VectorInputs{}.time);
  EXPECT_EQ(envelope.iv, kmstest::VectorInputs{}.iv_a_for_b);
  EXPECT_EQ(protocol::serialize_envelope(envelope), bytes);
  // 28 + 32 + lp(25) + lp(23) + 16
  EXPECT_EQ(bytes.size(), 28u + 32 + 27 + 25 + 16);
}

TEST(EnvelopeCodec, TypedErrorsForEveryMalformation) {
  const Bytes good = vector_value("E_B");
  EXPECT_EQ(error_of([] { protocol::parse_envelope({}); }), ErrorCode::malformed_request);
  Bytes version = good;
  version[0] = 2;
  EXPECT_EQ(error_of([&] { protocol::parse_envelope(version); }), ErrorCode::unsupported_version);
  for (std::uint8_t type : {0x00, 0x03, 0x11, 0x12, 0xff}) {
    Bytes typed = good;
    typed[1] = type;
    EXPECT_EQ(error_of([&] { protocol::parse_envelope(typed); }), ErrorCode::unknown_message_type)
        << int(type);
  }
  for (std::size_t size : {std::size_t{1}, std::size_t{2}, std::size_t{27}, std::size_t{28},
                           protocol::kMinEnvelopeSize - 1}) {
    Bytes truncated(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(size));
    EXPECT_EQ(error_of([&] { protocol::parse_envelope(truncated); }), ErrorCode::malformed_request)
        << size;
  }
  Bytes over_long = good;
  over_long.resize(protocol::kMaxEnvelopeSize + 1, 0);
  EXPECT_EQ(error_of([&] { protocol::parse_envelope(over_long); }), ErrorCode::malformed_request);
  Bytes max_size = good;
  max_size.resize(protocol::kMaxEnvelopeSize, 0);
  EXPECT_NO_THROW(protocol::parse_envelope(max_size));
}

TEST(EnvelopeCodec, EveryPrefixOfAnEnvelopeIsRejectedOrParsedWithoutUb) {
  const Bytes good = vector_value("E_A_for_C");
  for (std::size_t size = 0; size < good.size(); ++size) {
    Bytes prefix(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(size));
    try {
      protocol::parse_envelope(prefix);
      EXPECT_GE(size, protocol::kMinEnvelopeSize);
    } catch (const ProtocolError& error) {
      EXPECT_EQ(error.code(), ErrorCode::malformed_request);
    }
  }
}

TEST(EnvelopeCodec, RandomBytesNeverCrash) {
  std::srand(11);
  for (int n = 0; n < 5000; ++n) {
    Bytes data(static_cast<std::size_t>(std::rand() % 700));
    for (auto& b : data) b = static_cast<std::uint8_t>(std::rand());
    if (!data.empty() && n % 2 == 0) data[0] = 1;
    if (data.size() > 1 && n % 4 == 0) data[1] = 1;
    try {
      protocol::parse_envelope(data);
    } catch (const ProtocolError&) {
    }
    try {
      protocol::parse_response(data);
    } catch (const ProtocolError&) {
    }
    try {
      protocol::parse_envelope_plaintext(data);
    } catch (const ProtocolError&) {
    }
  }
}

TEST(EnvelopeCodec, PlaintextLayoutIsExact) {
  Bytes plain = kmstest::counting(0, 32);
  protocol::append_lp(plain, std::string_view("sip:a@x.example"));
  protocol::append_lp(plain, std::string_view("sip:b@x.example"));
  const auto parsed = protocol::parse_envelope_plaintext(plain);
  EXPECT_EQ(parsed.chair_id, "sip:a@x.example");
  EXPECT_EQ(parsed.responder_id, "sip:b@x.example");
  Bytes trailing = plain;
  trailing.push_back(0);
  EXPECT_EQ(error_of([&] { protocol::parse_envelope_plaintext(trailing); }),
            ErrorCode::identity_mismatch);
  Bytes short_plain(plain.begin(), plain.end() - 1);
  EXPECT_EQ(error_of([&] { protocol::parse_envelope_plaintext(short_plain); }),
            ErrorCode::identity_mismatch);
  Bytes overrun = plain;
  overrun[32] = 0xff;  // first length prefix far too long
  EXPECT_EQ(error_of([&] { protocol::parse_envelope_plaintext(overrun); }),
            ErrorCode::identity_mismatch);
}

TEST(ResponseCodec, RoundTripAndStrictness) {
  const Bytes good = vector_value("response_B");
  ASSERT_EQ(good.size(), protocol::kResponseSize);
  const protocol::Response response = protocol::parse_response(good);
  EXPECT_EQ(response.type, protocol::MessageType::responder_response);
  EXPECT_EQ(response.conference_id, vector_value("conf_id"));
  EXPECT_EQ(response.key_id, vector_value("key_id_B"));
  EXPECT_EQ(protocol::serialize_response(response), good);

  Bytes truncated(good.begin(), good.end() - 1);
  EXPECT_EQ(error_of([&] { protocol::parse_response(truncated); }), ErrorCode::malformed_request);
  Bytes over_long = good;
  over_long.push_back(0);
  EXPECT_EQ(error_of([&] { protocol::parse_response(over_long); }), ErrorCode::malformed_request);
  Bytes version = good;
  version[0] = 9;
  EXPECT_EQ(error_of([&] { protocol::parse_response(version); }), ErrorCode::unsupported_version);
  Bytes reflected = vector_value("E_B");  // an envelope offered as a response
  EXPECT_EQ(error_of([&] { protocol::parse_response(reflected); }),
            ErrorCode::unknown_message_type);
  Bytes length_field = good;
  length_field[29] = 41;
  EXPECT_EQ(error_of([&] { protocol::parse_response(length_field); }),
            ErrorCode::malformed_request);
}

// The identity rule the key-request service applies (tokens/identity.h; invalid_identity).
TEST(Protocol, IdentityRules) {
  EXPECT_TRUE(tokens::is_ims_identity("sip:alice@ims.example.net"));
  EXPECT_TRUE(tokens::is_ims_identity("sips:alice@ims.example.net"));
  EXPECT_TRUE(tokens::is_ims_identity("tel:+15551234567"));
  EXPECT_FALSE(tokens::is_ims_identity(""));
  EXPECT_FALSE(tokens::is_ims_identity("sip:"));
  EXPECT_FALSE(tokens::is_ims_identity("mailto:alice@example.net"));
  EXPECT_FALSE(tokens::is_ims_identity("sip:alice @example.net"));
  // 257 and 256 bytes (protocol::kMaxIdentitySize).
  EXPECT_FALSE(tokens::is_ims_identity("sip:" + std::string(241, 'a') + "@example.net"));
  EXPECT_TRUE(tokens::is_ims_identity("sip:" + std::string(240, 'a') + "@example.net"));
}

// The HTTP statuses are the server's (tests/server/wire_test.cpp HttpStatus.StableMapping).
TEST(Protocol, ErrorNamesAreStable) {
  EXPECT_EQ(kms::error_code_name(ErrorCode::envelope_authentication_failed),
            "envelope_authentication_failed");
  EXPECT_EQ(kms::error_code_name(ErrorCode::replay), "replay");
  ProtocolError error(ErrorCode::stale_timestamp, "too old");
  EXPECT_STREQ(error.what(), "stale_timestamp: too old");
}

}  // namespace
