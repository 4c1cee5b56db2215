// A bridge release wraps the keys outside the registry's commit and only re-checks the
// conference inside it: a member admitted between the release's read and its commit is
// released (the release is redone), never silently left out; a conference that keeps
// changing ends in overloaded with nothing bound or released.
#include "interleaving_registry.h"
#include "service_fixture.h"

namespace kmstest {
namespace {

using kms::client::Bytes;
using kms::client::UeClient;

class ReleaseRecheck : public ServiceTest {
 protected:
  // B admitted to A's conference (r_a); returns the key B holds.
  Bytes admit(const UeClient& chair, const kms::client::Secret& r_a, const UeClient& responder) {
    const kms::client::Secret r_n = UeClient::make_nonce();
    const kms::KeyResponse response =
        bed->key_requests().handle(request(chair, r_a, responder, r_n), context());
    return bytes(responder
                     .open_responder_response(response.responder_response, r_n, chair.identity(),
                                              kSuite, response.conference_id)
                     .key);
  }

  kms::TokenBridgeService bridge_service(InterleavingRegistry& registry) {
    return kms::TokenBridgeService(bed->token(), bed->store(), registry, bed->audit());
  }
};

TEST_P(ReleaseRecheck, MemberAdmittedBetweenReadAndCommitIsReleased) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Bytes conference = kms::client::conference_id(a_id, r_a.view());
  admit(a, r_a, b);
  Bytes c_key;
  InterleavingRegistry registry(bed->registry());
  registry.after_find = [&](int find) {
    if (find == 1) c_key = admit(a, r_a, c);  // after the release read the conference
  };
  kms::TokenBridgeService bridges = bridge_service(registry);

  const kms::BridgeRelease release = bridges.release(bridge_id, conference, context("bridge"));

  EXPECT_EQ(registry.finds, 2) << "the release was not redone after the admission";
  EXPECT_EQ(registry.release_hooks, 2);
  ASSERT_EQ(release.keys.size(), 3u);
  const kms::client::BridgeClient bridge = bed->bridge(bridge_id, bridge_key);
  const kms::ReleasedKey& item = release.keys[2];
  EXPECT_EQ(item.member_id, c_id);
  EXPECT_EQ(bytes(bridge
                      .open(conference,
                            {item.member_id, item.role, item.key_id, item.suite, item.wrapped})
                      .key),
            c_key);
  // One audited release, naming C; the binding is recorded.
  EXPECT_EQ(bed->audit().count("key_release", "ok"), 1u);
  for (const kms::AuditEvent& event : bed->audit().events()) {
    if (event.event == "key_release") {
      EXPECT_EQ(event.fields.at("members"), a_id + "," + b_id + "," + c_id);
      EXPECT_EQ(event.fields.at("count"), "3");
    }
  }
  EXPECT_EQ(bed->registry().find(conference)->bridge_id, bridge_id);
}

TEST_P(ReleaseRecheck, ReadmittedMemberGetsItsNewKey) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Bytes conference = kms::client::conference_id(a_id, r_a.view());
  admit(a, r_a, b);
  Bytes b_key;
  InterleavingRegistry registry(bed->registry());
  registry.after_find = [&](int find) {
    if (find == 1) b_key = admit(a, r_a, b);  // same member set, new nonce and key id
  };
  kms::TokenBridgeService bridges = bridge_service(registry);

  const kms::BridgeRelease release = bridges.release(bridge_id, conference, context("bridge"));

  EXPECT_EQ(registry.finds, 2);
  ASSERT_EQ(release.keys.size(), 2u);
  const kms::client::BridgeClient bridge = bed->bridge(bridge_id, bridge_key);
  const kms::ReleasedKey& item = release.keys[1];
  EXPECT_EQ(bytes(bridge
                      .open(conference,
                            {item.member_id, item.role, item.key_id, item.suite, item.wrapped})
                      .key),
            b_key);
}

TEST_P(ReleaseRecheck, ConferenceChangingOnEveryAttemptIsOverloadedAndNothingBound) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Bytes conference = kms::client::conference_id(a_id, r_a.view());
  admit(a, r_a, b);
  InterleavingRegistry registry(bed->registry());
  registry.after_find = [&](int) { admit(a, r_a, b); };
  kms::TokenBridgeService bridges = bridge_service(registry);

  EXPECT_EQ(error_of([&] { bridges.release(bridge_id, conference, context("bridge")); }),
            kms::ErrorCode::overloaded);
  EXPECT_EQ(registry.finds, 3);
  EXPECT_EQ(bed->audit().count("key_release"), 0u);
  EXPECT_EQ(bed->audit().count("refusal", "overloaded"), 1u);
  EXPECT_FALSE(bed->registry().find(conference)->bridge_id.has_value());
  // Once the conference holds still, the release goes through.
  registry.after_find = nullptr;
  EXPECT_EQ(bridges.release(bridge_id, conference, context("bridge")).keys.size(), 2u);
}

TEST_P(ReleaseRecheck, RefusalsAreDecidedBeforeAnyTokenWork) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Bytes conference = kms::client::conference_id(a_id, r_a.view());
  admit(a, r_a, b);
  const std::string other = "sip:bridge2@conf.example.net";
  bed->add_bridge(other, random_key());
  InterleavingRegistry registry(bed->registry());
  kms::TokenBridgeService bridges = bridge_service(registry);
  ASSERT_EQ(bridges.release(bridge_id, conference, context("bridge")).keys.size(), 2u);

  EXPECT_EQ(error_of([&] { bridges.release(other, conference, context("other")); }),
            kms::ErrorCode::bridge_not_authorized);
  EXPECT_EQ(registry.release_hooks, 1) << "a refused release reached the commit";
  Bytes unknown = conference;
  unknown[0] ^= 1;
  EXPECT_EQ(error_of([&] { bridges.release(bridge_id, unknown, context("unknown")); }),
            kms::ErrorCode::unknown_conference);
  EXPECT_EQ(bed->audit().count("refusal", "bridge_not_authorized"), 1u);
  EXPECT_EQ(bed->audit().count("refusal", "unknown_conference"), 1u);
  EXPECT_EQ(bed->registry().find(conference)->bridge_id, bridge_id);
}

INSTANTIATE_TEST_SUITE_P(Tokens, ReleaseRecheck,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
