// Every refusal of the key-request and bridge services: the specific error code, and
// nothing admitted (registry unchanged) and nothing released (no key_release, no binding).
#include "kms/client/envelope_builder.h"
#include "kms/core/protocol.h"
#include "service_fixture.h"
#include "vector_inputs.h"

namespace kmstest {
namespace {

using kms::ErrorCode;
using kms::client::Bytes;
using kms::client::UeClient;

class KeyRequestRefusals : public ServiceTest {
 protected:
  std::int64_t now = 1'800'000'000;
  TestbedOptions options() override {
    TestbedOptions o;
    o.service.clock = [this] { return now; };
    o.service.freshness_window_seconds = 300;
    o.service.conference_lifetime_seconds = 3600;
    return o;
  }

  kms::client::Secret r_a = UeClient::make_nonce();
  kms::client::Secret r_b = UeClient::make_nonce();
  std::optional<UeClient> a;  // built in SetUp, once the token's profile is known
  std::optional<UeClient> b;
  void SetUp() override {
    ServiceTest::SetUp();
    a.emplace(ue(a_id, k_a));
    b.emplace(ue(b_id, k_b));
  }
  kms::client::EnvelopeOptions at_now() { return {static_cast<std::uint64_t>(now), std::nullopt}; }

  kms::KeyRequest good_request() {
    kms::KeyRequest req;
    req.chair_id = a_id;
    req.responder_id = b_id;
    req.chair_envelope = a->chair_envelope(r_a, b_id, kSuite, at_now());
    req.responder_envelope = b->responder_envelope(r_b, a_id, kSuite, at_now());
    return req;
  }

  Bytes conference() { return kms::client::conference_id(a_id, r_a); }

  // The request is refused with `code`, and nothing was admitted or released.
  void expect_refused(const kms::KeyRequest& req, ErrorCode code) {
    const std::size_t before = member_count(conference());
    const std::size_t admissions = bed->audit().count("admission");
    EXPECT_EQ(error_of([&] { bed->key_requests().handle(req, context()); }), code)
        << kms::error_code_name(code);
    EXPECT_EQ(member_count(conference()), before);
    EXPECT_EQ(bed->audit().count("admission"), admissions);
    EXPECT_EQ(bed->audit().count("key_release"), 0u);
    EXPECT_GE(bed->audit().count("refusal", std::string(kms::error_code_name(code))), 1u);
  }
};

TEST_P(KeyRequestRefusals, TamperedCiphertextTagOrAad) {
  kms::KeyRequest req = good_request();
  req.chair_envelope[40] ^= 0x01;  // ciphertext
  expect_refused(req, ErrorCode::envelope_authentication_failed);
  req = good_request();
  req.responder_envelope.back() ^= 0x80;  // tag
  expect_refused(req, ErrorCode::envelope_authentication_failed);
  req = good_request();
  req.chair_envelope[3] = 2;  // header (AAD): suite 1 -> 2 in both, so the suites agree
  req.responder_envelope[3] = 2;
  expect_refused(req, ErrorCode::envelope_authentication_failed);
  req = good_request();
  req.responder_envelope[27] ^= 0x01;  // IV
  expect_refused(req, ErrorCode::envelope_authentication_failed);
  req = good_request();
  req.chair_envelope[15] ^= 0x01;  // timestamp (AAD), 1 s later: still fresh
  expect_refused(req, ErrorCode::envelope_authentication_failed);
}

TEST_P(KeyRequestRefusals, EnvelopesSwappedBetweenParties) {
  kms::KeyRequest req = good_request();
  std::swap(req.chair_envelope, req.responder_envelope);
  expect_refused(req, ErrorCode::unknown_message_type);
  // The chair's envelope re-labelled as a responder's (type byte changed): AAD fails.
  req = good_request();
  Bytes relabelled = req.chair_envelope;
  relabelled[1] = 0x02;
  req.responder_envelope = relabelled;
  expect_refused(req, ErrorCode::envelope_authentication_failed);
  // Plain IDs swapped (B as chair, A as responder).
  req = good_request();
  std::swap(req.chair_id, req.responder_id);
  expect_refused(req, ErrorCode::envelope_authentication_failed);
}

TEST_P(KeyRequestRefusals, EncryptedIdentityDiffersFromThePlainOne) {
  kms::client::EnvelopeFields fields;
  fields.type = kms::client::MessageType::chair_invite;
  fields.profile = static_cast<std::uint8_t>(bed->profile());
  fields.timestamp = static_cast<std::uint64_t>(now);
  fields.iv = kmstest::counting(1, 12);
  fields.chair_id = a_id;
  fields.responder_id = b_id;
  fields.encrypted_chair_id = a_id;
  // A invited Eve, the request claims B. Eve's ID has the length of B's, so the envelope has
  // the size the plain IDs imply and reaches the token (authentic: the AAD has the plain IDs).
  fields.encrypted_responder_id = "sip:eve@ims.example.net";
  ASSERT_EQ(fields.encrypted_responder_id.size(), b_id.size());
  kms::KeyRequest req = good_request();
  req.chair_envelope = kms::client::seal_envelope(a->envelope_key(), fields, r_a);
  expect_refused(req, ErrorCode::identity_mismatch);
}

// An envelope that cannot hold the plain IDs (its size is not 80 + len(ID-A) + len(ID-B)):
// malformed_request, before any cryptography (docs/PROTOCOL.md "Envelope", step 2).
TEST_P(KeyRequestRefusals, EnvelopeSizeDisagreesWithThePlainIds) {
  kms::client::EnvelopeFields fields;
  fields.type = kms::client::MessageType::chair_invite;
  fields.profile = static_cast<std::uint8_t>(bed->profile());
  fields.timestamp = static_cast<std::uint64_t>(now);
  fields.iv = kmstest::counting(1, 12);
  fields.chair_id = a_id;
  fields.responder_id = b_id;
  fields.encrypted_chair_id = a_id;
  fields.encrypted_responder_id = c_id;  // A invited C (16 bytes), the request claims B (23)
  kms::KeyRequest req = good_request();
  req.chair_envelope = kms::client::seal_envelope(a->envelope_key(), fields, r_a);
  ASSERT_EQ(req.chair_envelope.size(), 80 + a_id.size() + c_id.size());
  expect_refused(req, ErrorCode::malformed_request);
  for (const int delta : {-1, 1}) {
    req = good_request();
    req.responder_envelope.resize(req.responder_envelope.size() + delta, 0);
    expect_refused(req, ErrorCode::malformed_request);
  }
}

TEST_P(KeyRequestRefusals, EnvelopeMadeWithAnotherSubscribersKey) {
  const UeClient mallory_as_b(b_id, k_c, 1, bed->profile());  // C's key, B's name
  kms::KeyRequest req = good_request();
  req.responder_envelope = mallory_as_b.responder_envelope(r_b, a_id, kSuite, at_now());
  expect_refused(req, ErrorCode::envelope_authentication_failed);
}

TEST_P(KeyRequestRefusals, UnknownOrRevokedSubscriber) {
  const UeClient stranger("sip:stranger@ims.example.net", random_key(), 1, bed->profile());
  kms::KeyRequest req = good_request();
  req.responder_id = stranger.identity();
  req.chair_envelope = a->chair_envelope(r_a, stranger.identity(), kSuite, at_now());
  req.responder_envelope = stranger.responder_envelope(r_b, a_id, kSuite, at_now());
  expect_refused(req, ErrorCode::unknown_subscriber);
  bed->revoke(tokens::IdentityKind::subscriber, b_id);
  expect_refused(good_request(), ErrorCode::subscriber_revoked);
}

TEST_P(KeyRequestRefusals, InvalidIdentity) {
  kms::KeyRequest req = good_request();
  req.responder_id = "bob";
  expect_refused(req, ErrorCode::invalid_identity);
  req = good_request();
  req.responder_id = a_id;
  expect_refused(req, ErrorCode::invalid_identity);
  const std::string longest = "sip:" + std::string(236, 'b') + "@ims.example.net";
  ASSERT_EQ(longest.size(), 256u);
  for (const std::string& id : {std::string(), longest + "t"}) {  // 0 and 257 bytes
    req = good_request();
    req.chair_id = id;
    expect_refused(req, ErrorCode::invalid_identity);
  }
  // 256 bytes is an identity (of nobody provisioned here).
  req = good_request();
  req.chair_id = longest;
  req.chair_envelope =
      UeClient(longest, k_a, 1, bed->profile()).chair_envelope(r_a, b_id, kSuite, at_now());
  req.responder_envelope = b->responder_envelope(r_b, longest, kSuite, at_now());
  expect_refused(req, ErrorCode::unknown_subscriber);
}

TEST_P(KeyRequestRefusals, StaleOrFutureTimestamp) {
  kms::KeyRequest req = good_request();
  req.chair_envelope =
      a->chair_envelope(r_a, b_id, kSuite, {static_cast<std::uint64_t>(now - 301), std::nullopt});
  expect_refused(req, ErrorCode::stale_timestamp);
  req = good_request();
  req.responder_envelope = b->responder_envelope(
      r_b, a_id, kSuite, {static_cast<std::uint64_t>(now + 301), std::nullopt});
  expect_refused(req, ErrorCode::stale_timestamp);
  // The window's edges are inside.
  req = good_request();
  req.chair_envelope =
      a->chair_envelope(r_a, b_id, kSuite, {static_cast<std::uint64_t>(now - 300), std::nullopt});
  req.responder_envelope = b->responder_envelope(
      r_b, a_id, kSuite, {static_cast<std::uint64_t>(now + 300), std::nullopt});
  EXPECT_NO_THROW(bed->key_requests().handle(req, context()));
}

TEST_P(KeyRequestRefusals, ReplayOfAnEnvelopeInAnotherRequest) {
  const kms::KeyRequest first = good_request();
  bed->key_requests().handle(first, context());
  EXPECT_EQ(member_count(conference()), 2u);
  // The same E_B with a fresh E_A (B replays its own old request part).
  kms::KeyRequest replayed = good_request();
  replayed.responder_envelope = first.responder_envelope;
  expect_refused(replayed, ErrorCode::replay);
  // The same E_A with a fresh E_B.
  replayed = good_request();
  replayed.chair_envelope = first.chair_envelope;
  expect_refused(replayed, ErrorCode::replay);
  // And after a restart (durable replay record).
  bed->reopen_registry();
  expect_refused(replayed, ErrorCode::replay);
}

TEST_P(KeyRequestRefusals, WrongVersionTypeProfileSuiteOrKeyVersion) {
  kms::KeyRequest req = good_request();
  req.chair_envelope[0] = 2;
  expect_refused(req, ErrorCode::unsupported_version);
  req = good_request();
  req.responder_envelope[1] = 0x12;  // a response type in an envelope slot
  expect_refused(req, ErrorCode::unknown_message_type);
  req = good_request();
  req.chair_envelope[2] = req.chair_envelope[2] == 1 ? 2 : 1;
  expect_refused(req, ErrorCode::profile_mismatch);
  req = good_request();
  req.chair_envelope[3] = 3;
  req.responder_envelope[3] = 3;
  expect_refused(req, ErrorCode::unsupported_suite);
  req = good_request();
  req.responder_envelope =
      b->responder_envelope(r_b, a_id, kms::client::Suite::aead_aes_128_gcm, at_now());
  expect_refused(req, ErrorCode::suite_mismatch);
  const UeClient b_v2(b_id, k_b, 2, bed->profile());
  req = good_request();
  req.responder_envelope = b_v2.responder_envelope(r_b, a_id, kSuite, at_now());
  expect_refused(req, ErrorCode::key_version_mismatch);
}

TEST_P(KeyRequestRefusals, TruncatedOrOverLongInput) {
  kms::KeyRequest req = good_request();
  req.chair_envelope.resize(40);
  expect_refused(req, ErrorCode::malformed_request);
  req = good_request();
  req.responder_envelope.clear();
  expect_refused(req, ErrorCode::malformed_request);
  req = good_request();
  req.responder_envelope.resize(kms::protocol::kMaxEnvelopeSize + 1, 0);
  expect_refused(req, ErrorCode::malformed_request);
  req = good_request();
  // Within 90..592 bytes but one short of the size its plain IDs make it: malformed before
  // any cryptography (docs/PROTOCOL.md "Envelope"), not a failed authentication.
  req.responder_envelope.pop_back();
  expect_refused(req, ErrorCode::malformed_request);
}

TEST_P(KeyRequestRefusals, ExpiredConference) {
  bed->key_requests().handle(good_request(), context());
  now += 3600;
  const UeClient c = ue(c_id, k_c);
  kms::KeyRequest req = good_request();
  req.responder_id = c_id;
  req.chair_envelope = a->chair_envelope(r_a, c_id, kSuite, at_now());
  req.responder_envelope = c.responder_envelope(UeClient::make_nonce(), a_id, kSuite, at_now());
  expect_refused(req, ErrorCode::conference_expired);
}

// docs/SERVER.md "Retention and purge": expired from expires_at (created_at + lifetime) on,
// kept 3600 s more (conference_expired), deleted by the first purge at or after that
// (unknown_conference); each replay record lives until its envelope's timestamp + window.
TEST_P(KeyRequestRefusals, ConferenceAndReplayRecordRetentionAsDocumented) {
  const std::int64_t created = now;
  bed->key_requests().handle(good_request(), context());
  ASSERT_EQ(bed->registry().find(conference())->expires_at, created + 3600);
  const auto release_code = [&] {
    return error_of([&] { bed->bridges().release(bridge_id, conference(), context()); });
  };
  // The replay records: kept through timestamp + window (300 s), gone after.
  EXPECT_EQ(bed->registry().purge_expired(created + 300), 0u);
  EXPECT_EQ(bed->registry().replay_entries(), 2u);
  EXPECT_EQ(bed->registry().purge_expired(created + 301), 0u);
  EXPECT_EQ(bed->registry().replay_entries(), 0u);
  now = created + 3599;
  EXPECT_EQ(bed->bridges().release(bridge_id, conference(), context()).keys.size(), 2u);
  now = created + 3600;  // expires_at
  EXPECT_EQ(release_code(), ErrorCode::conference_expired);
  EXPECT_EQ(bed->registry().purge_expired(created + 3600 + 3599), 0u);  // retained
  now = created + 3600 + 3599;
  EXPECT_EQ(release_code(), ErrorCode::conference_expired);
  EXPECT_EQ(bed->registry().purge_expired(created + 3600 + 3600), 1u);  // expires_at + 3600
  EXPECT_EQ(release_code(), ErrorCode::unknown_conference);
}

TEST_P(KeyRequestRefusals, EverySingleByteChangeIsRefused) {
  const kms::KeyRequest good = good_request();
  std::srand(5);
  for (int n = 0; n < 60; ++n) {
    kms::KeyRequest req = good;
    Bytes& envelope = (n % 2 == 0) ? req.chair_envelope : req.responder_envelope;
    const std::size_t at = static_cast<std::size_t>(std::rand()) % envelope.size();
    envelope[at] ^= static_cast<std::uint8_t>(1 + std::rand() % 255);
    const ErrorCode code = error_of([&] { bed->key_requests().handle(req, context()); });
    EXPECT_NE(code, ErrorCode::internal_error) << "byte " << at;
    EXPECT_NE(code, ErrorCode::token_unavailable) << "byte " << at;
  }
  EXPECT_EQ(member_count(conference()), 0u);
  EXPECT_EQ(bed->audit().count("admission"), 0u);
  EXPECT_EQ(bed->audit().count("refusal"), 60u);
  EXPECT_NO_THROW(bed->key_requests().handle(good, context()));  // none of them was a replay
}

INSTANTIATE_TEST_SUITE_P(Tokens, KeyRequestRefusals,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

class BridgeRefusals : public KeyRequestRefusals {
 protected:
  Bytes admitted() { return bed->key_requests().handle(good_request(), context()).conference_id; }
  void expect_release_refused(const std::string& bridge, const Bytes& conf, ErrorCode code) {
    const auto bound_before = bed->registry().find(conf);
    EXPECT_EQ(error_of([&] { bed->bridges().release(bridge, conf, context("bridge")); }), code)
        << kms::error_code_name(code);
    EXPECT_EQ(bed->audit().count("key_release"), 0u);
    EXPECT_GE(bed->audit().count("refusal", std::string(kms::error_code_name(code))), 1u);
    const auto bound_after = bed->registry().find(conf);
    EXPECT_EQ(bound_before ? bound_before->bridge_id : std::nullopt,
              bound_after ? bound_after->bridge_id : std::nullopt);
  }
};

TEST_P(BridgeRefusals, BridgeNotProvisionedOrRevoked) {
  const Bytes conf = admitted();
  expect_release_refused("sip:rogue@conf.example.net", conf, ErrorCode::bridge_not_provisioned);
  expect_release_refused(a_id, conf, ErrorCode::bridge_not_provisioned);  // a subscriber
  bed->revoke(tokens::IdentityKind::bridge, bridge_id);
  expect_release_refused(bridge_id, conf, ErrorCode::bridge_revoked);
}

TEST_P(BridgeRefusals, UnknownOrExpiredConference) {
  expect_release_refused(bridge_id, Bytes(16, 0x42), ErrorCode::unknown_conference);
  expect_release_refused(bridge_id, Bytes(15, 0x42), ErrorCode::malformed_request);
  const Bytes conf = admitted();
  now += 3600;
  expect_release_refused(bridge_id, conf, ErrorCode::conference_expired);
}

TEST_P(BridgeRefusals, ConferenceBoundToAnotherBridge) {
  const std::string other = "sip:bridge2@conf.example.net";
  bed->add_bridge(other, random_key());
  const Bytes conf = admitted();
  const kms::BridgeRelease release = bed->bridges().release(bridge_id, conf, context("first"));
  EXPECT_EQ(release.keys.size(), 2u);
  const std::size_t releases = bed->audit().count("key_release");
  EXPECT_EQ(error_of([&] { bed->bridges().release(other, conf, context("second")); }),
            ErrorCode::bridge_not_authorized);
  EXPECT_EQ(bed->audit().count("key_release"), releases);
  EXPECT_EQ(bed->audit().count("refusal", "bridge_not_authorized"), 1u);
  EXPECT_EQ(bed->registry().find(conf)->bridge_id, bridge_id);
}

INSTANTIATE_TEST_SUITE_P(Tokens, BridgeRefusals,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
