// The services under concurrent load, where the registry commits admissions and bindings
// in groups: requests, retransmissions, replays and bridge releases from many threads give
// the results a one-by-one order gives, every answered request is audited and survives a
// restart, and the keys the bridge gets are the ones the UEs hold.
#include <map>
#include <mutex>
#include <thread>

#include "service_fixture.h"
#include "support/test_database.h"

#ifdef KMS_HAVE_AUDIT_LOG
#include "kms/audit/audit_log.h"
#include "kms/audit/audit_verify.h"
#endif

namespace kmstest {
namespace {

using kms::client::Bytes;
using kms::client::Secret;
using kms::client::UeClient;

class ServiceGroupCommit : public ServiceTest {
 protected:
  static constexpr int kMembers = 8;
  static constexpr int kConferences = 2;

  struct Member {
    std::string id;
    Bytes key;
    Secret r_b = UeClient::make_nonce();
    Secret replay_r_b = UeClient::make_nonce();
    kms::KeyRequest request;  // sent twice (a retransmission)
    kms::KeyRequest replay;   // another request reusing the chair envelope: a replay
  };

  std::vector<Secret> r_a;
  std::vector<Member> members;

  void prepare() {
    for (int c = 0; c < kConferences; ++c) r_a.push_back(UeClient::make_nonce());
    const UeClient a = ue(a_id, k_a);
    for (int i = 0; i < kMembers; ++i) {
      Member m;
      m.id = "sip:member" + std::to_string(i) + "@ims.example.net";
      m.key = random_key();
      bed->add_subscriber(m.id, m.key);
      const UeClient responder = ue(m.id, m.key);
      m.request = request(a, r_a[i % kConferences].view(), responder, m.r_b.view());
      m.replay = m.request;
      m.replay.responder_envelope = responder.responder_envelope(m.replay_r_b.view(), a_id, kSuite);
      members.push_back(std::move(m));
    }
  }

  // Every member's request twice and its replay once, spread over threads in a mixed
  // order; each thread then has the bridge fetch conference 0.
  void run_concurrently(int threads) {
    struct Attempt {
      int member;
      bool replay;
    };
    std::vector<Attempt> attempts;
    for (int i = 0; i < kMembers; ++i) {
      attempts.push_back({i, false});
      attempts.push_back({i, true});
      attempts.push_back({i, false});
    }
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (std::size_t n = static_cast<std::size_t>(t); n < attempts.size();
             n += static_cast<std::size_t>(threads)) {
          const Member& m = members[static_cast<std::size_t>(attempts[n].member)];
          std::string result = "ok";
          std::optional<kms::KeyResponse> response;
          try {
            response = bed->key_requests().handle(attempts[n].replay ? m.replay : m.request,
                                                  context("r" + std::to_string(n)));
          } catch (const kms::ProtocolError& error) {
            result = std::string(kms::error_code_name(error.code()));
          }
          std::lock_guard lock(mutex);
          auto& slot = attempts[n].replay ? replay_results : request_results;
          slot[attempts[n].member].push_back(result);
          if (response) responses[{attempts[n].member, attempts[n].replay}].push_back(*response);
        }
        std::string result = "ok";
        try {
          bed->bridges().release(bridge_id, kms::client::conference_id(a_id, r_a[0]),
                                 context("bridge"));
        } catch (const kms::ProtocolError& error) {
          result = std::string(kms::error_code_name(error.code()));
        }
        std::lock_guard lock(mutex);
        release_results.push_back(result);
      });
    }
    for (std::thread& worker : workers) worker.join();
  }

  // Checks the results against a one-by-one order, then (after a restart) the keys the
  // bridge gets against the keys the UEs open. Returns the admissions and retransmissions.
  std::pair<std::size_t, std::size_t> check_results() {
    const UeClient a = ue(a_id, k_a);
    std::size_t admissions = 0, retransmissions = 0;
    std::map<int, Bytes> member_keys;  // what each admitted member holds
    for (int i = 0; i < kMembers; ++i) {
      const Member& m = members[static_cast<std::size_t>(i)];
      std::vector<std::string> mine = request_results[i];
      const bool replay_won = replay_results[i] == std::vector<std::string>{"ok"};
      if (replay_won) {
        EXPECT_EQ(mine, (std::vector<std::string>{"replay", "replay"})) << m.id;
        ++admissions;
      } else {
        EXPECT_EQ(mine, (std::vector<std::string>{"ok", "ok"})) << m.id;
        EXPECT_EQ(replay_results[i], std::vector<std::string>{"replay"}) << m.id;
        const auto& answers = responses[{i, false}];
        if (answers.size() == 2) {  // a retransmission gets the identical answer
          EXPECT_EQ(answers[0].responder_response, answers[1].responder_response);
          EXPECT_EQ(answers[0].chair_response, answers[1].chair_response);
        }
        ++admissions;
        ++retransmissions;
      }
      const auto& answer = responses[{i, replay_won}].at(0);
      const UeClient responder = ue(m.id, m.key);
      member_keys[i] = bytes(responder
                                 .open_responder_response(answer.responder_response,
                                                          replay_won ? m.replay_r_b : m.r_b, a_id,
                                                          kSuite, answer.conference_id)
                                 .key);
    }
    for (const std::string& result : release_results) {
      if (result == "ok") {
        ++releases;
      } else {  // a thread that finished before conference 0 existed
        EXPECT_EQ(result, "unknown_conference");
      }
    }

    bed->reopen_registry();  // a restart: everything answered must still be there
    const kms::client::BridgeClient bridge = bed->bridge(bridge_id, bridge_key);
    for (int c = 0; c < kConferences; ++c) {
      const Bytes conference = kms::client::conference_id(a_id, r_a[static_cast<std::size_t>(c)]);
      const kms::BridgeRelease release =
          bed->bridges().release(bridge_id, conference, context("after restart"));
      EXPECT_EQ(release.keys.size(), 1u + kMembers / kConferences);
      for (const kms::ReleasedKey& item : release.keys) {
        const Bytes key = bytes(bridge
                                    .open(conference, {item.member_id, item.role, item.key_id,
                                                       item.suite, item.wrapped})
                                    .key);
        if (item.member_id == a_id) continue;
        const int i = std::stoi(item.member_id.substr(std::string("sip:member").size()));
        EXPECT_EQ(i % kConferences, c);
        EXPECT_EQ(key, member_keys[i]) << item.member_id;
      }
    }
    return {admissions, retransmissions};
  }

  std::mutex mutex;
  std::map<int, std::vector<std::string>> request_results, replay_results;
  std::map<std::pair<int, bool>, std::vector<kms::KeyResponse>> responses;
  std::vector<std::string> release_results;
  std::size_t releases = 0;  // bridge fetches during the run that succeeded
};

TEST_P(ServiceGroupCommit, ConcurrentRequestsReplaysAndReleasesAreConsistentAndDurable) {
  prepare();
  run_concurrently(8);
  const auto [admissions, retransmissions] = check_results();
  EXPECT_EQ(bed->audit().count("admission", "ok"), admissions);
  EXPECT_EQ(bed->audit().count("retransmission", "ok"), retransmissions);
  EXPECT_EQ(bed->audit().count("refusal", "replay"), 3 * kMembers - admissions - retransmissions);
  EXPECT_EQ(bed->audit().count("key_release", "ok"), releases + kConferences);
}

#ifdef KMS_HAVE_AUDIT_LOG
TEST_P(ServiceGroupCommit, TheHashChainedAuditLogHoldsEveryConcurrentRecord) {
  kms::audit::AuditLog log(bed->dir() + "/audit.jsonl");
  bed->rebuild_services(log, {});
  prepare();
  run_concurrently(8);
  // Requests: each an admission, retransmission or refusal; 8 releases or refusals.
  const std::uint64_t during_run = 3 * kMembers + 8;
  EXPECT_EQ(log.stats().records, during_run);
  EXPECT_EQ(log.stats().failures, 0u);
  const kms::audit::VerifyResult verified = kms::audit::verify_file(bed->dir() + "/audit.jsonl");
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_EQ(verified.records, during_run);
}
#endif

// The same run with the key database and the registry on PostgreSQL (its group commit).
class ServiceGroupCommitOnPostgres : public ServiceGroupCommit {
 protected:
  void SetUp() override {
    if (!testsupport::PostgresCluster::binaries()) {
      GTEST_SKIP() << testsupport::PostgresCluster::missing_message();
    }
    ServiceGroupCommit::SetUp();
  }
  TestbedOptions options() override {
    TestbedOptions options;
    options.database = testsupport::PostgresCluster::shared().create_database();
    return options;
  }
};

TEST_P(ServiceGroupCommitOnPostgres, ConcurrentRequestsReplaysAndReleasesAreConsistentAndDurable) {
  prepare();
  run_concurrently(8);
  const auto [admissions, retransmissions] = check_results();
  EXPECT_EQ(bed->audit().count("admission", "ok"), admissions);
  EXPECT_EQ(bed->audit().count("retransmission", "ok"), retransmissions);
  EXPECT_EQ(bed->audit().count("refusal", "replay"), 3 * kMembers - admissions - retransmissions);
  EXPECT_EQ(bed->audit().count("key_release", "ok"), releases + kConferences);
}

INSTANTIATE_TEST_SUITE_P(Tokens, ServiceGroupCommitOnPostgres,
                         ::testing::Values(testsupport::TokenKind::softhsm), kind_test_name);

INSTANTIATE_TEST_SUITE_P(Tokens, ServiceGroupCommit,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
