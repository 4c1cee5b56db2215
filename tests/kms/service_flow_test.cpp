// The whole seed flow in process, on SoftHSM (profile 1) and NSS softoken (profile 2):
// A invites B and C (sequentially and concurrently), the bridge fetches, every party holds
// the keys it should.
#include <thread>

#include "reference_kms.h"
#include "service_fixture.h"

#ifdef KMS_HAVE_AUDIT_LOG
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <utility>
#include <vector>

#include "kms/audit/audit_log.h"
#include "kms/audit/audit_record.h"
#include "kms/audit/audit_verify.h"
#endif

namespace kmstest {
namespace {

using kms::client::Bytes;
using kms::client::MediaKey;
using kms::client::UeClient;

class SeedFlow : public ServiceTest {
 protected:
  struct Invitation {
    kms::KeyResponse response;
    MediaKey chair_key;      // K1 as UE-A opens it
    MediaKey responder_key;  // K_N as the invitee opens it
  };

  Invitation invite(const UeClient& chair, const kms::client::Secret& r_a,
                    const UeClient& responder) {
    const kms::client::Secret r_b = UeClient::make_nonce();
    const kms::KeyRequest req = request(chair, r_a, responder, r_b);
    Invitation out;
    out.response = bed->key_requests().handle(req, context());
    out.responder_key = responder.open_responder_response(
        out.response.responder_response, r_b, chair.identity(), kSuite, out.response.conference_id);
    // UE-B relays E_A(R_A, K1) to UE-A (steps 7-8).
    out.chair_key =
        chair.open_chair_response(out.response.chair_response, r_a, responder.identity(), kSuite);
    return out;
  }

  std::map<std::string, Bytes> fetch(const Bytes& conference_id, std::size_t expected) {
    const kms::BridgeRelease release =
        bed->bridges().release(bridge_id, conference_id, context("bridge"));
    EXPECT_EQ(release.conference_id, conference_id);
    EXPECT_EQ(release.keys.size(), expected);
    EXPECT_EQ(release.profile, static_cast<std::uint8_t>(bed->profile()));
    const kms::client::BridgeClient bridge = bed->bridge(bridge_id, bridge_key);
    std::map<std::string, Bytes> keys;
    for (const kms::ReleasedKey& item : release.keys) {
      const MediaKey key = bridge.open(
          conference_id, {item.member_id, item.role, item.key_id, item.suite, item.wrapped});
      keys[item.member_id] = bytes(key.key);
      EXPECT_EQ(item.role, item.member_id == a_id ? 1 : 2);
    }
    return keys;
  }
};

TEST_P(SeedFlow, SequentialInvitationsGiveEveryPartyTheRightKeys) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  const Invitation with_c = invite(a, r_a, c);

  const Bytes conference = with_b.response.conference_id;
  EXPECT_EQ(conference, kms::client::conference_id(a_id, r_a));
  EXPECT_EQ(with_c.response.conference_id, conference);
  const Bytes k1 = bytes(with_b.chair_key.key);
  EXPECT_EQ(bytes(with_c.chair_key.key), k1) << "K1 must not depend on the invitee";
  EXPECT_NE(with_b.response.chair_response, with_c.response.chair_response);

  const auto bridge_keys = fetch(conference, 3);
  EXPECT_EQ(bridge_keys.at(a_id), k1);
  EXPECT_EQ(bridge_keys.at(b_id), bytes(with_b.responder_key.key));
  EXPECT_EQ(bridge_keys.at(c_id), bytes(with_c.responder_key.key));
  EXPECT_NE(k1, bytes(with_b.responder_key.key));
  EXPECT_NE(k1, bytes(with_c.responder_key.key));
  EXPECT_NE(bytes(with_b.responder_key.key), bytes(with_c.responder_key.key));

  EXPECT_EQ(bed->audit().count("admission", "ok"), 2u);
  EXPECT_EQ(bed->audit().count("key_release", "ok"), 1u);
  EXPECT_EQ(bed->registry().find(conference)->bridge_id, bridge_id);
}

// The services need no read/write session: the testbed's pool is read-only, as kmsd's is
// by default (docs/OPERATIONS.md "Key custody"), on both tokens, and the whole flow,
// including the key store's unwraps into session objects, works.
TEST_P(SeedFlow, RunsOnReadOnlySessions) {
  hsm::SessionPool& pool = bed->token().pool();
  EXPECT_TRUE(pool.config().read_only);
  EXPECT_EQ(pool.run([](hsm::Session& session) { return session.state(); }),
            static_cast<CK_STATE>(CKS_RO_USER_FUNCTIONS));
  EXPECT_EQ(pool.run_pinned([](hsm::Session& session) { return session.state(); }),
            static_cast<CK_STATE>(CKS_RO_USER_FUNCTIONS));
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  const auto bridge_keys = fetch(with_b.response.conference_id, 2);
  EXPECT_EQ(bridge_keys.at(a_id), bytes(with_b.chair_key.key));
  EXPECT_EQ(bridge_keys.at(b_id), bytes(with_b.responder_key.key));
}

TEST_P(SeedFlow, ConcurrentInvitationsFromSeveralThreads) {
  constexpr int kInvitees = 8;
  std::vector<std::string> ids;
  std::vector<Bytes> keys;
  for (int i = 0; i < kInvitees; ++i) {
    ids.push_back("sip:member" + std::to_string(i) + "@ims.example.net");
    keys.push_back(random_key());
    bed->add_subscriber(ids.back(), keys.back());
  }
  const UeClient a = ue(a_id, k_a);
  const kms::client::Secret r_a = UeClient::make_nonce();
  std::vector<std::optional<Invitation>> results(kInvitees);
  std::vector<std::string> failures(kInvitees);
  std::vector<std::thread> threads;
  for (int i = 0; i < kInvitees; ++i) {
    threads.emplace_back([&, i] {
      try {
        const UeClient member = ue(ids[i], keys[i]);
        results[i] = invite(a, r_a, member);
      } catch (const std::exception& error) {
        failures[i] = error.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();

  const Bytes conference = kms::client::conference_id(a_id, r_a);
  const auto bridge_keys = fetch(conference, kInvitees + 1);
  std::set<Bytes> distinct{bridge_keys.at(a_id)};
  for (int i = 0; i < kInvitees; ++i) {
    ASSERT_TRUE(results[i]) << failures[i];
    EXPECT_EQ(bytes(results[i]->chair_key.key), bridge_keys.at(a_id));
    EXPECT_EQ(bytes(results[i]->responder_key.key), bridge_keys.at(ids[i]));
    distinct.insert(bytes(results[i]->responder_key.key));
  }
  EXPECT_EQ(distinct.size(), static_cast<std::size_t>(kInvitees + 1));
  EXPECT_EQ(bed->audit().count("admission", "ok"), static_cast<std::size_t>(kInvitees));
}

TEST_P(SeedFlow, RetransmissionGetsTheIdenticalAnswerAndAdmitsNothingNew) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  const kms::KeyRequest req = request(a, r_a, b, r_b);
  const kms::KeyResponse first = bed->key_requests().handle(req, context("1"));
  const kms::KeyResponse again = bed->key_requests().handle(req, context("2"));
  EXPECT_EQ(again.conference_id, first.conference_id);
  EXPECT_EQ(again.chair_response, first.chair_response);
  EXPECT_EQ(again.responder_response, first.responder_response);
  EXPECT_EQ(member_count(first.conference_id), 2u);
  EXPECT_EQ(bed->audit().count("admission"), 1u);
  EXPECT_EQ(bed->audit().count("retransmission"), 1u);
}

TEST_P(SeedFlow, LaterMembersAreReleasedOnTheNextFetch) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  EXPECT_EQ(fetch(with_b.response.conference_id, 2).size(), 2u);
  const Invitation with_c = invite(a, r_a, c);
  const auto keys = fetch(with_b.response.conference_id, 3);
  EXPECT_EQ(keys.at(c_id), bytes(with_c.responder_key.key));
}

TEST_P(SeedFlow, AeadSuiteConferenceEndToEnd) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const auto suite = kms::client::Suite::aead_aes_128_gcm;
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  kms::KeyRequest req;
  req.chair_id = a_id;
  req.responder_id = b_id;
  req.chair_envelope = a.chair_envelope(r_a, b_id, suite);
  req.responder_envelope = b.responder_envelope(r_b, a_id, suite);
  const kms::KeyResponse response = bed->key_requests().handle(req, context());
  const MediaKey k1 = a.open_chair_response(response.chair_response, r_a, b_id, suite);
  const MediaKey k2 = b.open_responder_response(response.responder_response, r_b, a_id, suite,
                                                response.conference_id);
  EXPECT_EQ(k1.master_salt.size(), 12u);
  EXPECT_EQ(k2.suite, 2);
  const kms::BridgeRelease release =
      bed->bridges().release(bridge_id, response.conference_id, context("bridge"));
  ASSERT_EQ(release.keys.size(), 2u);
  EXPECT_EQ(release.keys[1].suite, 2);
  const kms::client::BridgeClient bridge = bed->bridge(bridge_id, bridge_key);
  const auto& item = release.keys[1];
  EXPECT_EQ(bytes(bridge
                      .open(response.conference_id,
                            {item.member_id, item.role, item.key_id, item.suite, item.wrapped})
                      .key),
            bytes(k2.key));
  // The same chair nonce with the other suite is refused: the conference's suite is fixed.
  const UeClient c = ue(c_id, k_c);
  const kms::client::Secret r_c = UeClient::make_nonce();
  EXPECT_EQ(error_of([&] { bed->key_requests().handle(request(a, r_a, c, r_c), context()); }),
            kms::ErrorCode::suite_mismatch);
  EXPECT_EQ(member_count(response.conference_id), 2u);
}

TEST_P(SeedFlow, RegistrySurvivesARestart) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  bed->reopen_registry();  // close the database, open it again, new services
  const auto keys = fetch(with_b.response.conference_id, 2);
  EXPECT_EQ(keys.at(a_id), bytes(with_b.chair_key.key));
  EXPECT_EQ(keys.at(b_id), bytes(with_b.responder_key.key));
}

TEST_P(SeedFlow, AdmissionFailsClosedWhenTheAuditFails) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  const kms::KeyRequest req = request(a, r_a, b, r_b);
  bed->audit().fail_from_now_on(true);
  EXPECT_EQ(error_of([&] { bed->key_requests().handle(req, context()); }),
            kms::ErrorCode::audit_unavailable);
  EXPECT_EQ(member_count(kms::client::conference_id(a_id, r_a)), 0u);
  bed->audit().fail_from_now_on(false);
  // Nothing was recorded: the same request is admitted (not a replay) once audit works.
  EXPECT_NO_THROW(bed->key_requests().handle(req, context()));
}

TEST_P(SeedFlow, ReleaseFailsClosedWhenTheAuditFails) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  bed->audit().fail_from_now_on(true);
  EXPECT_EQ(error_of([&] {
              bed->bridges().release(bridge_id, with_b.response.conference_id, context());
            }),
            kms::ErrorCode::audit_unavailable);
  EXPECT_FALSE(bed->registry().find(with_b.response.conference_id)->bridge_id);
  bed->audit().fail_from_now_on(false);
  EXPECT_EQ(fetch(with_b.response.conference_id, 2).size(), 2u);
}

#ifdef KMS_HAVE_AUDIT_LOG
TEST_P(SeedFlow, WritesTheHashChainedAuditLog) {
  kms::audit::AuditLog log(bed->dir() + "/audit.jsonl");
  bed->rebuild_services(log, {});
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  fetch(with_b.response.conference_id, 2);
  EXPECT_EQ(log.stats().records, 2u);
  const kms::audit::VerifyResult verified = kms::audit::verify_file(bed->dir() + "/audit.jsonl");
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_EQ(verified.records, 2u);
  // Identities and ids are in the log; no key or nonce bytes are.
  std::ifstream in(bed->dir() + "/audit.jsonl");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("admission"), std::string::npos);
  EXPECT_NE(text.find("key_release"), std::string::npos);
  EXPECT_NE(text.find(b_id), std::string::npos);
  const kms::client::Bytes k1 = bytes(with_b.chair_key.key);
  const std::string k1_hex = kmstest::hex(k1);
  const std::string r_a_hex = kmstest::hex(r_a.view());
  EXPECT_EQ(text.find(k1_hex.substr(0, 16)), std::string::npos);
  EXPECT_EQ(text.find(r_a_hex.substr(0, 16)), std::string::npos);
}
#endif

#if defined(KMS_HAVE_AUDIT_LOG) && defined(KMS_AUDIT_BIN)
std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc);
  for (const std::string& line : lines) out << line << "\n";
}

// Runs kms-audit as a process: exit code and stdout + stderr.
std::pair<int, std::string> kms_audit(const std::string& arguments) {
  const std::string command = std::string(KMS_AUDIT_BIN) + " verify " + arguments + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  std::string out;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe)) out += buffer;
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// The registry stores the audit log's durable head in the COMMIT of every admission and
// release: a log whose last records were deleted (cut at a line boundary, which the chain
// alone still accepts) or whose last record was rewritten fails `--anchor-db`.
TEST_P(SeedFlow, AuditAnchorInTheRegistryCatchesATruncatedOrAlteredLog) {
  const std::string path = bed->dir() + "/audit.jsonl";
  const std::string db = bed->dir() + "/kms.db";
  kms::audit::AuditLog log(path);
  bed->rebuild_services(log, {});
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const Invitation with_b = invite(a, r_a, b);
  invite(a, r_a, c);
  fetch(with_b.response.conference_id, 3);
  ASSERT_TRUE(log.head());
  EXPECT_EQ(log.head()->seq, 3u);
  const std::string anchored = "anchored seq 3 (hash " + log.head()->hash + ")";

  auto [code, out] = kms_audit("'" + path + "' --anchor-db '" + db + "'");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("anchored seq 3"), std::string::npos) << out;

  const std::vector<std::string> lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  write_lines(path, {lines[0], lines[1]});  // the key release's record deleted
  std::tie(code, out) = kms_audit("'" + path + "'");
  EXPECT_EQ(code, 0) << "the chain alone can't see a cut at a record boundary: " << out;
  std::tie(code, out) = kms_audit("'" + path + "' --anchor-db '" + db + "'");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("audit log truncated or altered: " + anchored + " not found"),
            std::string::npos)
      << out;

  // The last record rewritten, its hash recomputed: still a valid chain, not the anchored one.
  std::string body = lines[2].substr(0, lines[2].find(kms::audit::kHashMarker));
  const auto outcome = body.find("\"outcome\":\"ok\"");
  ASSERT_NE(outcome, std::string::npos) << body;
  body.replace(outcome, 14, "\"outcome\":\"no\"");
  const std::string altered =
      body + std::string(kms::audit::kHashMarker) + kms::audit::sha256_hex(body) + "\"}";
  ASSERT_TRUE(kms::audit::line_hash(altered).ok());
  write_lines(path, {lines[0], lines[1], altered});
  std::tie(code, out) = kms_audit("'" + path + "'");
  EXPECT_EQ(code, 0) << out;
  std::tie(code, out) = kms_audit("'" + path + "' --anchor-db '" + db + "'");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(anchored + " not found"), std::string::npos) << out;
  EXPECT_NE(out.find("record 3 has hash " + kms::audit::line_hash(altered).claimed),
            std::string::npos)
      << out;

  write_lines(path, lines);  // the original log verifies again
  std::tie(code, out) = kms_audit("'" + path + "' --anchor-db '" + db + "'");
  EXPECT_EQ(code, 0) << out;
}
#endif

INSTANTIATE_TEST_SUITE_P(Tokens, SeedFlow,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
