// A fixture with a fresh token per test, subscribers A, B, C and bridge Y provisioned with
// random known keys, and helpers to play the seed flow with kms_client.
#pragma once

#include <gtest/gtest.h>

#include "kms/client/crypto.h"
#include "testbed.h"

namespace kmstest {

inline kms::client::Bytes random_key() {
  const kms::client::Secret key = kms::client::random_bytes(32);
  return kms::client::Bytes(key.view().begin(), key.view().end());
}

inline std::string kind_test_name(const ::testing::TestParamInfo<testsupport::TokenKind>& info) {
  return testsupport::token_kind_name(info.param);
}

class ServiceTest : public ::testing::TestWithParam<testsupport::TokenKind> {
 protected:
  static constexpr auto kSuite = kms::client::Suite::aes_cm_128_hmac_sha1_80;
  const std::string a_id = "sip:alice@ims.example.net";
  const std::string b_id = "sip:bob@ims.example.net";
  const std::string c_id = "tel:+15551234567";
  const std::string bridge_id = "sip:bridge1@conf.example.net";
  const kms::client::Bytes k_a = random_key(), k_b = random_key(), k_c = random_key();
  const kms::client::Bytes bridge_key = random_key();
  std::unique_ptr<Testbed> bed;

  virtual TestbedOptions options() { return {}; }

  void SetUp() override {
    bed = std::make_unique<Testbed>(GetParam(), options());
    bed->add_subscriber(a_id, k_a);
    bed->add_subscriber(b_id, k_b);
    bed->add_subscriber(c_id, k_c);
    bed->add_bridge(bridge_id, bridge_key);
  }
  void TearDown() override { bed.reset(); }

  kms::client::UeClient ue(const std::string& id, const kms::client::Bytes& key) {
    return bed->ue(id, key);
  }

  // What UE-B sends to the KMS when A invites it (steps 2-4).
  kms::KeyRequest request(const kms::client::UeClient& chair, kms::client::ByteView r_a,
                          const kms::client::UeClient& responder, kms::client::ByteView r_b) {
    kms::KeyRequest request;
    request.chair_id = chair.identity();
    request.responder_id = responder.identity();
    request.chair_envelope = chair.chair_envelope(r_a, responder.identity(), kSuite);
    request.responder_envelope = responder.responder_envelope(r_b, chair.identity(), kSuite);
    return request;
  }

  kms::RequestContext context(const std::string& id = "req") { return {"127.0.0.1:1", id}; }

  std::size_t member_count(const kms::client::Bytes& conference_id) {
    auto conference = bed->registry().find(conference_id);
    return conference ? conference->members.size() : 0;
  }

  static kms::client::Bytes bytes(const kms::client::Secret& secret) {
    return kms::client::Bytes(secret.view().begin(), secret.view().end());
  }
};

}  // namespace kmstest
