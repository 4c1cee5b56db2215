// docs/PROTOCOL.md's test vectors on the token path: with the KMS keys imported at their
// vector values, the services must return exactly the documented responses and bridge
// items (profile 1 on SoftHSM, profile 2 on NSS softoken).
#include "protocol_doc.h"
#include "service_fixture.h"

namespace kmstest {
namespace {

class TokenVectors : public ::testing::TestWithParam<testsupport::TokenKind> {};

TEST_P(TokenVectors, ServicesReproduceTheDocumentedBytes) {
  const VectorInputs in;
  TestbedOptions options;
  options.master_key = in.master;
  options.service.clock = [&] { return in.server_time; };
  Testbed bed(GetParam(), options);
  bed.add_subscriber(in.chair_id, in.k_a);
  bed.add_subscriber(in.member_b_id, in.k_b);
  bed.add_subscriber(in.member_c_id, in.k_c);
  bed.add_bridge(in.bridge_id, in.bridge_key);

  const NamedValues doc = vectors_from_doc(static_cast<int>(bed.profile()));
  ASSERT_FALSE(doc.empty());
  auto v = [&](const std::string& name) { return value_of(doc, name); };

  const kms::KeyResponse for_b = bed.key_requests().handle(
      {in.chair_id, in.member_b_id, v("E_A_for_B"), v("E_B")}, {"test", "b"});
  EXPECT_EQ(hex(for_b.conference_id), hex(v("conf_id")));
  EXPECT_EQ(hex(for_b.chair_response), hex(v("response_A_for_B")));
  EXPECT_EQ(hex(for_b.responder_response), hex(v("response_B")));

  const kms::KeyResponse for_c = bed.key_requests().handle(
      {in.chair_id, in.member_c_id, v("E_A_for_C"), v("E_C")}, {"test", "c"});
  EXPECT_EQ(hex(for_c.chair_response), hex(v("response_A_for_C")));
  EXPECT_EQ(hex(for_c.responder_response), hex(v("response_C")));

  const kms::BridgeRelease release =
      bed.bridges().release(in.bridge_id, v("conf_id"), {"test", "bridge"});
  ASSERT_EQ(release.keys.size(), 3u);
  const std::pair<std::string, std::string> expected[] = {
      {in.chair_id, "A"}, {in.member_b_id, "B"}, {in.member_c_id, "C"}};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(release.keys[i].member_id, expected[i].first);
    EXPECT_EQ(hex(release.keys[i].key_id), hex(v("key_id_" + expected[i].second)));
    EXPECT_EQ(hex(release.keys[i].wrapped), hex(v("bridge_wrapped_" + expected[i].second)));
  }
}

INSTANTIATE_TEST_SUITE_P(Tokens, TokenVectors,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
