// No plaintext key passes through the server code: the services run against the recording
// PKCS#11 module (tests/hsm/fault_module), and every token call they make is checked:
// only session housekeeping, decrypt, derive, wrap, unwrap (root keys from the database)
// and destroy on handles; never a key value read (C_GetAttributeValue of CKA_VALUE), never
// a key created from a value (C_CreateObject), never C_Encrypt, no C_FindObjects on the
// hot path, every per-request object destroyed (the key store keeps only KE_X and KR_X),
// every derive template sensitive.
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "interleaving_registry.h"
#include "service_fixture.h"

namespace kmstest {
namespace {

using kms::client::Bytes;
using kms::client::UeClient;

struct Call {
  std::string function;
  std::string mechanism;
  std::vector<std::string> attributes;
  std::string rv;
};

std::vector<Call> read_record(const std::string& path) {
  std::ifstream in(path);
  std::vector<Call> calls;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    Call call;
    words >> call.function;
    std::string word;
    while (words >> word) {
      if (word.rfind("mech=", 0) == 0) call.mechanism = word.substr(5);
      if (word.rfind("rv=", 0) == 0) call.rv = word.substr(3);
      if (word.rfind("attrs=", 0) == 0) {
        std::stringstream list(word.substr(6));
        std::string attribute;
        while (std::getline(list, attribute, ',')) call.attributes.push_back(attribute);
      }
    }
    calls.push_back(std::move(call));
  }
  return calls;
}

bool has(const Call& call, const std::string& attribute) {
  return std::find(call.attributes.begin(), call.attributes.end(), attribute) !=
         call.attributes.end();
}

class RecordedServices : public ServiceTest {
 protected:
  std::unique_ptr<testsupport::TempDir> record_dir =
      std::make_unique<testsupport::TempDir>("kms-record");
  std::string record_file = record_dir->path() + "/calls.txt";

  TestbedOptions options() override {
    TestbedOptions o;
    o.module_override = KMS_FAULT_MODULE_PATH;
    o.record_file = record_file;
    return o;
  }

  void invite(const UeClient& chair, const kms::client::Secret& r_a, const UeClient& member) {
    const kms::client::Secret r_b = UeClient::make_nonce();
    const kms::KeyResponse response =
        bed->key_requests().handle(request(chair, r_a, member, r_b), context());
    member.open_responder_response(response.responder_response, r_b, chair.identity(), kSuite,
                                   response.conference_id);
    chair.open_chair_response(response.chair_response, r_a, member.identity(), kSuite);
  }
};

TEST_P(RecordedServices, TokenCallsNeverExposeKeyMaterial) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  // Warm-up: the first request finds the KMS keys once (C_FindObjects) and caches them.
  invite(a, UeClient::make_nonce(), b);
  std::ofstream(record_file, std::ios::trunc).close();  // the module appends (O_APPEND)

  const kms::client::Secret r_a = UeClient::make_nonce();
  invite(a, r_a, b);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back([&] { invite(a, r_a, c); });
  for (auto& thread : threads) thread.join();
  // A refusal (tampered envelope) goes through the same token calls.
  kms::KeyRequest tampered = request(a, r_a, b, UeClient::make_nonce());
  tampered.responder_envelope[50] ^= 1;
  EXPECT_EQ(error_of([&] { bed->key_requests().handle(tampered, context()); }),
            kms::ErrorCode::envelope_authentication_failed);
  const kms::BridgeRelease release =
      bed->bridges().release(bridge_id, kms::client::conference_id(a_id, r_a), context("bridge"));
  EXPECT_EQ(release.keys.size(), 3u);

  const std::vector<Call> calls = read_record(record_file);
  ASSERT_FALSE(calls.empty()) << "nothing recorded in " << record_file;
  const std::set<std::string> allowed = {"C_OpenSession", "C_CloseSession", "C_GetSessionInfo",
                                         "C_DecryptInit", "C_Decrypt",      "C_DeriveKey",
                                         "C_WrapKey",     "C_UnwrapKey",    "C_DestroyObject"};
  std::map<std::string, int> ok_counts;
  for (const Call& call : calls) {
    EXPECT_TRUE(allowed.count(call.function)) << "unexpected token call " << call.function;
    EXPECT_FALSE(call.function == "C_GetAttributeValue" && has(call, "0x11"))
        << "the server read a key value";
    EXPECT_NE(call.function, "C_CreateObject");
    EXPECT_EQ(call.function.find("Encrypt"), std::string::npos);
    EXPECT_EQ(call.function.find("FindObjects"), std::string::npos)
        << "C_FindObjects on the hot path";
    if (call.function == "C_DeriveKey") {
      EXPECT_TRUE(has(call, "0x103")) << "derive template without CKA_SENSITIVE";
      EXPECT_TRUE(has(call, "0x162")) << "derive template without CKA_EXTRACTABLE";
      EXPECT_FALSE(has(call, "0x11")) << "derive template with a value";
    }
    if (call.rv == "0x0") ++ok_counts[call.function];
  }
  // The key store keeps KE_X and KR_X per subscriber (A's and B's since the warm-up), and the
  // media-key cache the media keys: the first admission derives K1, K2, W_A and W_B; each of
  // the 3 admissions of C (each with a nonce of its own) its K and two W, K1 being kept; none
  // for the refusal (KE_A and KE_B are kept); the release one BW per member and no media key
  // (all kept). And for C, first used in the recorded window, one unwrap of its root key per
  // thread that missed the cache, each followed by the derives of KE_C and KR_C.
  EXPECT_GE(ok_counts["C_Decrypt"], 8);
  EXPECT_GE(ok_counts["C_WrapKey"], 8 + 3);
  const int unwraps = ok_counts["C_UnwrapKey"];  // C's root key (1 to 3 times), the bridge's
  ASSERT_GE(unwraps, 2);
  ASSERT_LE(unwraps, 4);
  const int c_unwraps = unwraps - 1;
  EXPECT_EQ(ok_counts["C_DeriveKey"], 4 + 3 * 3 + 3 + 2 * c_unwraps);
  // Every W and BW is destroyed, and so is each unwrapped root key of C once its children
  // exist, and the children of the unwraps that lost the race for the cache entry: KE_C and
  // KR_C stay (cached), and so do the media keys (kept, none evicted).
  EXPECT_EQ(ok_counts["C_DestroyObject"], 4 * 2 + 3 + c_unwraps + 2 * (c_unwraps - 1))
      << "a derived session object was left in the token, or a kept one destroyed";
}

// docs/PROTOCOL.md "Envelope": an envelope that is not the 80 + len(ID-A) + len(ID-B) bytes
// its plain IDs make it is malformed_request "before any cryptography": the token never
// decrypts (or derives a key) for it.
TEST_P(RecordedServices, AnEnvelopeOfAnotherSizeThanItsPlainIdsMakeItReachesNoDecryption) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  invite(a, UeClient::make_nonce(), b);  // warm-up: KMS keys found, root keys unwrapped
  const kms::client::Secret r_a = UeClient::make_nonce();
  std::vector<std::pair<std::string, kms::KeyRequest>> wrong_size;
  kms::KeyRequest longer = request(a, r_a, b, UeClient::make_nonce());
  longer.chair_envelope.push_back(0);  // 129 bytes, the IDs make it 128
  wrong_size.emplace_back("E_A one byte longer", longer);
  kms::KeyRequest shorter = request(a, r_a, b, UeClient::make_nonce());
  // C's envelope (sealed for ID-A, ID-C: 16 bytes) beside the plain ID-B (23 bytes).
  shorter.responder_envelope = c.responder_envelope(UeClient::make_nonce(), a_id, kSuite);
  wrong_size.emplace_back("E_B made for a shorter responder ID", shorter);

  for (const auto& [name, wrong_request] : wrong_size) {
    SCOPED_TRACE(name);
    const kms::KeyRequest& wrong = wrong_request;  // clang 14 cannot capture a binding
    std::ofstream(record_file, std::ios::trunc).close();
    EXPECT_EQ(error_of([&] { bed->key_requests().handle(wrong, context()); }),
              kms::ErrorCode::malformed_request);
    for (const Call& call : read_record(record_file)) {
      EXPECT_EQ(call.function.find("Decrypt"), std::string::npos)
          << call.function << " for an envelope refused by its size";
      EXPECT_NE(call.function, "C_DeriveKey") << "a key derived for a refused envelope";
    }
  }
  // The record does show decryption for an envelope of the right size (the check above is
  // not vacuous), refused by the token's GCM check instead.
  std::ofstream(record_file, std::ios::trunc).close();
  kms::KeyRequest tampered = request(a, r_a, b, UeClient::make_nonce());
  tampered.chair_envelope.back() ^= 1;
  EXPECT_EQ(error_of([&] { bed->key_requests().handle(tampered, context()); }),
            kms::ErrorCode::envelope_authentication_failed);
  const std::vector<Call> calls = read_record(record_file);
  EXPECT_TRUE(std::any_of(calls.begin(), calls.end(),
                          [](const Call& call) { return call.function == "C_Decrypt"; }));
}

// The release's token work (derive, wrap) happens before the registry's commit: inside the
// commit hook, where every admission batched with the release would wait for it, the
// token is not called at all.
TEST_P(RecordedServices, ReleaseMakesNoTokenCallsInsideTheRegistryCommit) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce();
  invite(a, r_a, b);
  invite(a, r_a, c);
  InterleavingRegistry registry(bed->registry());
  std::uintmax_t at_hook_start = 0, at_hook_end = 0;
  registry.before_release_hook = [&] { at_hook_start = std::filesystem::file_size(record_file); };
  registry.after_release_hook = [&] { at_hook_end = std::filesystem::file_size(record_file); };
  kms::TokenBridgeService bridges(bed->token(), bed->store(), registry, bed->audit());
  std::ofstream(record_file, std::ios::trunc).close();

  const kms::BridgeRelease release =
      bridges.release(bridge_id, kms::client::conference_id(a_id, r_a), context("bridge"));

  EXPECT_EQ(release.keys.size(), 3u);
  ASSERT_EQ(registry.release_hooks, 1);
  int wraps_before_commit = 0;
  for (const Call& call : read_record(record_file)) {
    if (call.function == "C_WrapKey" && call.rv == "0x0") ++wraps_before_commit;
  }
  EXPECT_EQ(wraps_before_commit, 3) << "the keys were not wrapped before the commit";
  EXPECT_GT(at_hook_start, 0u);
  EXPECT_EQ(at_hook_end, at_hook_start) << "token calls inside the registry's commit";
  EXPECT_EQ(std::filesystem::file_size(record_file), at_hook_end) << "token calls after the commit";
}

INSTANTIATE_TEST_SUITE_P(Tokens, RecordedServices,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
