// kms_client: envelopes, response opening and the bridge side, against the reference.
#include <gtest/gtest.h>

#include "kms/client/bridge_client.h"
#include "kms/client/client_error.h"
#include "kms/client/crypto.h"
#include "kms/client/envelope_builder.h"
#include "kms/client/ue_client.h"
#include "reference_kms.h"

namespace {

using namespace kms::client;
using kmstest::value_of;

class ClientTest : public ::testing::TestWithParam<Profile> {
 protected:
  kmstest::VectorInputs in;
  kmstest::NamedValues v = kmstest::compute_vectors(GetParam());
  UeClient alice{in.chair_id, in.k_a, 1, GetParam()};
  UeClient bob{in.member_b_id, in.k_b, 1, GetParam()};
  UeClient carol{in.member_c_id, in.k_c, 1, GetParam()};

  ClientErrorCode error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const ClientError& error) {
      return error.code();
    }
    ADD_FAILURE() << "no ClientError";
    return ClientErrorCode::crypto_failure;
  }
  Bytes bytes(const Secret& s) { return Bytes(s.view().begin(), s.view().end()); }
};

TEST_P(ClientTest, ChildKeysAndEnvelopesMatchTheReference) {
  EXPECT_EQ(bytes(alice.envelope_key()), value_of(v, "KE_A"));
  EXPECT_EQ(bytes(alice.response_key()), value_of(v, "KR_A"));
  EXPECT_EQ(bytes(bob.envelope_key()), value_of(v, "KE_B"));
  EXPECT_EQ(alice.chair_envelope(in.r_a, in.member_b_id, Suite::aes_cm_128_hmac_sha1_80,
                                 {in.time, in.iv_a_for_b}),
            value_of(v, "E_A_for_B"));
  EXPECT_EQ(bob.responder_envelope(in.r_b, in.chair_id, Suite::aes_cm_128_hmac_sha1_80,
                                   {in.time + 1, in.iv_b}),
            value_of(v, "E_B"));
  EXPECT_EQ(conference_id(in.chair_id, in.r_a), value_of(v, "conf_id"));
}

TEST_P(ClientTest, FreshEnvelopesDifferEvenForTheSameNonce) {
  const Bytes one = alice.chair_envelope(in.r_a, in.member_b_id, Suite::aes_cm_128_hmac_sha1_80);
  const Bytes two = alice.chair_envelope(in.r_a, in.member_b_id, Suite::aes_cm_128_hmac_sha1_80);
  EXPECT_NE(one, two);  // random IV
  EXPECT_EQ(UeClient::make_nonce().size(), 32u);
  EXPECT_FALSE(equal_constant_time(UeClient::make_nonce(), UeClient::make_nonce()));
}

TEST_P(ClientTest, OpensResponsesIntoSrtpKeys) {
  const MediaKey k1 = alice.open_chair_response(value_of(v, "response_A_for_B"), in.r_a,
                                                in.member_b_id, Suite::aes_cm_128_hmac_sha1_80);
  EXPECT_EQ(bytes(k1.key), value_of(v, "K1"));
  EXPECT_EQ(k1.master_key.size(), 16u);
  EXPECT_EQ(k1.master_salt.size(), 14u);
  EXPECT_EQ(Bytes(value_of(v, "K1").begin(), value_of(v, "K1").begin() + 16), bytes(k1.master_key));
  EXPECT_EQ(k1.key_id, value_of(v, "key_id_A"));
  const MediaKey k1_again = alice.open_chair_response(
      value_of(v, "response_A_for_C"), in.r_a, in.member_c_id, Suite::aes_cm_128_hmac_sha1_80);
  EXPECT_EQ(bytes(k1_again.key), bytes(k1.key));
  const MediaKey k2 =
      bob.open_responder_response(value_of(v, "response_B"), in.r_b, in.chair_id,
                                  Suite::aes_cm_128_hmac_sha1_80, value_of(v, "conf_id"));
  EXPECT_EQ(bytes(k2.key), value_of(v, "K2"));
  const MediaKey k3 =
      carol.open_responder_response(value_of(v, "response_C"), in.r_c, in.chair_id,
                                    Suite::aes_cm_128_hmac_sha1_80, value_of(v, "conf_id"));
  EXPECT_EQ(bytes(k3.key), value_of(v, "K3"));
}

TEST_P(ClientTest, RefusesTamperedOrMisdirectedResponses) {
  const Bytes good = value_of(v, "response_A_for_B");
  const auto suite = Suite::aes_cm_128_hmac_sha1_80;
  Bytes wrapped = good;
  wrapped[40] ^= 1;
  EXPECT_EQ(error_of([&] { alice.open_chair_response(wrapped, in.r_a, in.member_b_id, suite); }),
            ClientErrorCode::unwrap_failed);
  // Wrong invitee named: W differs.
  EXPECT_EQ(error_of([&] { alice.open_chair_response(good, in.r_a, in.member_c_id, suite); }),
            ClientErrorCode::unwrap_failed);
  // Wrong R_A: conf_id differs.
  EXPECT_EQ(error_of([&] { alice.open_chair_response(good, in.r_b, in.member_b_id, suite); }),
            ClientErrorCode::conference_mismatch);
  Bytes key_id = good;
  key_id[21] ^= 1;
  EXPECT_EQ(error_of([&] { alice.open_chair_response(key_id, in.r_a, in.member_b_id, suite); }),
            ClientErrorCode::key_id_mismatch);
  // The responder's response offered to the chair.
  EXPECT_EQ(error_of([&] {
              alice.open_chair_response(value_of(v, "response_B"), in.r_a, in.member_b_id, suite);
            }),
            ClientErrorCode::unexpected_type);
  EXPECT_EQ(error_of([&] {
              alice.open_chair_response(good, in.r_a, in.member_b_id, Suite::aead_aes_128_gcm);
            }),
            ClientErrorCode::suite_mismatch);
  Bytes profile = good;
  profile[2] = profile[2] == 1 ? 2 : 1;
  EXPECT_EQ(error_of([&] { alice.open_chair_response(profile, in.r_a, in.member_b_id, suite); }),
            ClientErrorCode::profile_mismatch);
  Bytes truncated(good.begin(), good.end() - 1);
  EXPECT_EQ(error_of([&] { alice.open_chair_response(truncated, in.r_a, in.member_b_id, suite); }),
            ClientErrorCode::malformed_message);
  // C cannot open B's response.
  EXPECT_EQ(error_of([&] {
              carol.open_responder_response(value_of(v, "response_B"), in.r_b, in.chair_id, suite,
                                            value_of(v, "conf_id"));
            }),
            ClientErrorCode::key_id_mismatch);
}

TEST_P(ClientTest, BridgeOpensItsItemsOnly) {
  BridgeClient bridge(in.bridge_id, in.bridge_key, GetParam());
  const Bytes& conf = value_of(v, "conf_id");
  BridgeItem item{in.member_b_id, 2, value_of(v, "key_id_B"), 1, value_of(v, "bridge_wrapped_B")};
  EXPECT_EQ(bytes(bridge.open(conf, item).key), value_of(v, "K2"));
  BridgeItem chair{in.chair_id, 1, value_of(v, "key_id_A"), 1, value_of(v, "bridge_wrapped_A")};
  EXPECT_EQ(bytes(bridge.open(conf, chair).key), value_of(v, "K1"));

  BridgeItem relabelled = item;
  relabelled.member_id = in.member_c_id;  // item of B presented as C's
  EXPECT_EQ(error_of([&] { bridge.open(conf, relabelled); }), ClientErrorCode::unwrap_failed);
  BridgeItem role = item;
  role.role = 1;
  EXPECT_EQ(error_of([&] { bridge.open(conf, role); }), ClientErrorCode::unwrap_failed);
  BridgeClient other("sip:bridge2@conf.example.net", in.bridge_key, GetParam());
  EXPECT_EQ(error_of([&] { other.open(conf, item); }), ClientErrorCode::unwrap_failed);
}

// A release names the bridge key version its items are wrapped under: a bridge holding
// another version is told key_version_mismatch before any item is unwrapped.
TEST_P(ClientTest, BridgeChecksTheReleasesKeyVersionBeforeUnwrapping) {
  const Bytes& conf = value_of(v, "conf_id");
  const std::vector<BridgeItem> items = {
      {in.chair_id, 1, value_of(v, "key_id_A"), 1, value_of(v, "bridge_wrapped_A")},
      {in.member_b_id, 2, value_of(v, "key_id_B"), 1, value_of(v, "bridge_wrapped_B")}};
  const BridgeClient v1(in.bridge_id, in.bridge_key, GetParam());  // version 1 by default
  EXPECT_EQ(v1.key_version(), 1u);
  const std::vector<MediaKey> keys = v1.open_release(conf, 1, items);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(bytes(keys[1].key), value_of(v, "K2"));
  for (const std::uint32_t other : {2u, 0u, 4294967295u}) {
    try {
      (void)v1.open_release(conf, other, items);
      ADD_FAILURE() << "opened a release of bridge key version " << other;
    } catch (const ClientError& error) {
      EXPECT_EQ(error.code(), ClientErrorCode::key_version_mismatch);
      EXPECT_NE(std::string(error.what()).find("bridge key version " + std::to_string(other)),
                std::string::npos)
          << error.what();
      EXPECT_NE(std::string(error.what()).find("holds version 1"), std::string::npos)
          << error.what();
    }
  }
  // The same key labelled version 3 (as its export file would say) opens version 3 only.
  const BridgeClient v3(in.bridge_id, in.bridge_key, GetParam(), 3);
  EXPECT_EQ(error_of([&] { v3.check_key_version(1); }), ClientErrorCode::key_version_mismatch);
  EXPECT_NO_THROW(v3.check_key_version(3));
  EXPECT_EQ(error_of([&] { BridgeClient(in.bridge_id, in.bridge_key, GetParam(), 0); }),
            ClientErrorCode::invalid_argument);
}

TEST_P(ClientTest, SuiteTwoUsesA12ByteSalt) {
  const MediaKey key = make_media_key(Bytes(16), Bytes(8), 2, Secret(kmstest::counting(0, 32)));
  EXPECT_EQ(key.master_key.size(), 16u);
  EXPECT_EQ(key.master_salt.size(), 12u);
  EXPECT_EQ(key.master_salt[0], 16);
}

TEST_P(ClientTest, RejectsBadArguments) {
  EXPECT_EQ(error_of([&] { UeClient("alice", in.k_a, 1, GetParam()); }),
            ClientErrorCode::invalid_argument);
  EXPECT_EQ(error_of([&] { UeClient(in.chair_id, Bytes(16), 1, GetParam()); }),
            ClientErrorCode::invalid_argument);
  EXPECT_EQ(error_of([&] {
              alice.chair_envelope(Bytes(31), in.member_b_id, Suite::aes_cm_128_hmac_sha1_80);
            }),
            ClientErrorCode::invalid_argument);
  EXPECT_EQ(error_of([&] { alice.chair_envelope(in.r_a, "bob", Suite::aes_cm_128_hmac_sha1_80); }),
            ClientErrorCode::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Profiles, ClientTest,
                         ::testing::Values(Profile::aes_ecb_sha256, Profile::sp800_108_cmac),
                         [](const auto& info) {
                           return info.param == Profile::aes_ecb_sha256 ? "AesEcbSha256"
                                                                        : "Sp800108Cmac";
                         });

}  // namespace
