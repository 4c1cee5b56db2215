// How the key-request service reads a token error depends on the token's quirks: on SoftHSM
// CKR_GENERAL_ERROR from C_Decrypt is its way of saying "the tag does not verify" (a client
// 403); on any other token it may be a device fault, which must surface as
// token_unavailable (503) and never blame the client. Faults come from the fault module
// (tests/hsm/fault_module) in front of the real token.
#include "fault_control.h"
#include "service_fixture.h"

namespace kmstest {
namespace {

using kms::ErrorCode;
using kms::client::UeClient;

class TokenErrorClassification : public ServiceTest {
 protected:
  explicit TokenErrorClassification(std::string quirks) : quirks_(std::move(quirks)) {}
  TestbedOptions options() override {
    TestbedOptions o;
    o.module_override = KMS_FAULT_MODULE_PATH;
    o.quirks = quirks_;
    return o;
  }
  void SetUp() override {
    ServiceTest::SetUp();
    faults_ = std::make_unique<hsmtest::FaultControl>(KMS_FAULT_MODULE_PATH);
    faults_->clear();
  }
  void TearDown() override {
    if (faults_) faults_->clear();
    faults_.reset();
    ServiceTest::TearDown();
  }

  // One key request whose first C_Decrypt (the chair's envelope) returns `rv`.
  ErrorCode request_meeting(CK_RV rv) {
    const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
    const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
    const kms::KeyRequest req = request(a, r_a, b, r_b);
    faults_->fail_next("C_Decrypt", rv, 1);
    const ErrorCode code = error_of([&] { bed->key_requests().handle(req, context()); });
    EXPECT_EQ(member_count(kms::client::conference_id(a_id, r_a)), 0u);  // nothing admitted
    return code;
  }

  std::string quirks_;
  std::unique_ptr<hsmtest::FaultControl> faults_;
};

// SoftHSM configured as a standard token; NSS with its own quirks, which read
// CKR_GENERAL_ERROR as a standard token does (forcing "standard" on NSS would also ask for
// CKA_COPYABLE, which NSS refuses at key creation).
class StandardTokenErrors : public TokenErrorClassification {
 protected:
  StandardTokenErrors()
      : TokenErrorClassification(GetParam() == testsupport::TokenKind::nss ? "nss" : "standard") {}
};
class SoftHsmTokenErrors : public TokenErrorClassification {
 protected:
  SoftHsmTokenErrors() : TokenErrorClassification("softhsm2") {}
};

TEST_P(StandardTokenErrors, GeneralErrorIsATokenFaultNotABadEnvelope) {
  EXPECT_EQ(request_meeting(CKR_GENERAL_ERROR), ErrorCode::token_unavailable);
  EXPECT_EQ(request_meeting(CKR_FUNCTION_FAILED), ErrorCode::token_unavailable);
  EXPECT_EQ(request_meeting(CKR_ENCRYPTED_DATA_INVALID), ErrorCode::envelope_authentication_failed);
  // The token is healthy again: the next request is served.
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  EXPECT_NO_THROW(bed->key_requests().handle(request(a, r_a, b, r_b), context()));
}

TEST_P(SoftHsmTokenErrors, GeneralErrorIsAFailedTag) {
  EXPECT_EQ(request_meeting(CKR_GENERAL_ERROR), ErrorCode::envelope_authentication_failed);
  EXPECT_EQ(request_meeting(CKR_FUNCTION_FAILED), ErrorCode::token_unavailable);
}

INSTANTIATE_TEST_SUITE_P(Tokens, StandardTokenErrors,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);
INSTANTIATE_TEST_SUITE_P(Tokens, SoftHsmTokenErrors,
                         ::testing::Values(testsupport::TokenKind::softhsm), kind_test_name);

// A subscriber's cached keys (KE_X, KR_X: session objects) destroyed behind the key store's
// back, a fault no recycle explains: the request meets CKR_OBJECT_HANDLE_INVALID, the pool
// recovers without changing the session-object generation, and the service must not run
// again with the same dead handles but unwrap the subscriber's key anew. Before that, the
// request failed with token_unavailable, and so did every later one of that subscriber
// until its entry left the cache.
class CachedKeyLoss : public ServiceTest {};

TEST_P(CachedKeyLoss, AKeyRequestUnwrapsAgainWhenItsCachedKeysAreGone) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  ASSERT_NO_THROW(bed->key_requests().handle(request(a, r_a, b, r_b), context("first")));

  const tokens::ResolvedKey cached = bed->store().resolve(tokens::IdentityKind::subscriber, a_id);
  ASSERT_GT(cached.key->child_count(), 0u);
  bed->token().pool().run_pinned([&](hsm::Session& session) {
    for (std::size_t i = 0; i < cached.key->child_count(); ++i) session.destroy(cached.child(i));
    return 0;
  });

  const kms::client::Secret r_a2 = UeClient::make_nonce(), r_c = UeClient::make_nonce();
  EXPECT_NO_THROW(bed->key_requests().handle(request(a, r_a2, c, r_c), context("second")));
  EXPECT_EQ(member_count(kms::client::conference_id(a_id, r_a2)), 2u) << "the chair and C";
  EXPECT_NE(bed->store().resolve(tokens::IdentityKind::subscriber, a_id).key, cached.key)
      << "the lost entry was replaced";
}

// The same for the bridge's cached key: its release unwraps it anew.
TEST_P(CachedKeyLoss, ABridgeReleaseUnwrapsAgainWhenItsCachedKeyIsGone) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  const kms::KeyResponse response =
      bed->key_requests().handle(request(a, r_a, b, r_b), context("invite"));
  ASSERT_NO_THROW(bed->bridges().release(bridge_id, response.conference_id, context("first")));

  const tokens::ResolvedKey cached = bed->store().resolve(tokens::IdentityKind::bridge, bridge_id);
  bed->token().pool().run_pinned([&](hsm::Session& session) {
    if (cached.handle() != CK_INVALID_HANDLE) session.destroy(cached.handle());
    for (std::size_t i = 0; i < cached.key->child_count(); ++i) session.destroy(cached.child(i));
    return 0;
  });
  EXPECT_NO_THROW(bed->bridges().release(bridge_id, response.conference_id, context("again")));
}

INSTANTIATE_TEST_SUITE_P(Tokens, CachedKeyLoss,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
