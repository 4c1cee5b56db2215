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

}  // namespace
}  // namespace kmstest
