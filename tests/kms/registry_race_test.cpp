// Two registry instances on one database are two nodes (separate connections; on
// PostgreSQL separate pools), their threads released together. Each race is repeated to
// catch a lost update: the same request sent to both nodes (one admission, one
// retransmission), one envelope replayed in two requests (one admitted, one replay), members
// of one conference admitted on both nodes at once (all kept, each once), one conference
// bound by two bridges (exactly one binds). Runs on SQLite and PostgreSQL.
#include <gtest/gtest.h>

#include <barrier>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "kms/core/protocol.h"
#include "kms/core/stored_conference_registry.h"
#include "support/test_database.h"

namespace {

using kms::Admission;
using kms::AdmissionOutcome;
using kms::Bytes;

constexpr std::int64_t kNow = 1'800'000'000;
constexpr int kRounds = 25;

Bytes tagged(std::uint8_t tag, int a, int b = 0) {
  Bytes out(32, tag);
  out[0] = static_cast<std::uint8_t>(a);
  out[1] = static_cast<std::uint8_t>(a >> 8);
  out[2] = static_cast<std::uint8_t>(b);
  out[3] = static_cast<std::uint8_t>(b >> 8);
  return out;
}

// Request `n` of conference `conference`, admitting member n.
Admission request(int conference, int n) {
  Admission a;
  a.chair_id = "sip:alice@ims.example.net";
  a.chair_nonce = hsm::SecureBytes(tagged(1, conference));
  a.conference_id = kms::protocol::conference_id(a.chair_id, a.chair_nonce.view());
  a.chair_key_id = kms::protocol::key_id(a.conference_id, a.chair_id, a.chair_nonce.view());
  a.responder_id = "sip:member" + std::to_string(n) + "@ims.example.net";
  a.responder_nonce = hsm::SecureBytes(tagged(2, conference, n));
  a.responder_key_id =
      kms::protocol::key_id(a.conference_id, a.responder_id, a.responder_nonce.view());
  a.profile = 1;
  a.suite = 1;
  a.request_digest = tagged(3, conference, n);
  a.envelopes[0] = {tagged(4, conference, n), kNow + 300};
  a.envelopes[1] = {tagged(5, conference, n), kNow + 300};
  a.now = kNow;
  a.conference_expires_at = kNow + 3600;
  return a;
}

// "admitted", "retransmission" or the refusal's code name.
std::string admit(kms::ConferenceRegistry& node, const Admission& a) {
  try {
    return node.admit(a, [](AdmissionOutcome) {}) == AdmissionOutcome::admitted ? "admitted"
                                                                                : "retransmission";
  } catch (const kms::ProtocolError& error) {
    return std::string(kms::error_code_name(error.code()));
  }
}

// Runs `first` and `second` on two threads released at the same moment.
void at_once(const std::function<void()>& first, const std::function<void()>& second) {
  std::barrier start(2);
  std::thread one([&] {
    start.arrive_and_wait();
    first();
  });
  std::thread two([&] {
    start.arrive_and_wait();
    second();
  });
  one.join();
  two.join();
}

class RegistryRaceTest : public ::testing::TestWithParam<testsupport::DatabaseBackend> {
 protected:
  void SetUp() override {
    KMS_REQUIRE_DATABASE(database);
    node_a = kms::open_conference_registry(database.url());
    node_b = kms::open_conference_registry(database.url());
  }
  testsupport::TestDatabase database{GetParam()};
  std::unique_ptr<kms::StoredConferenceRegistry> node_a;
  std::unique_ptr<kms::StoredConferenceRegistry> node_b;
};

TEST_P(RegistryRaceTest, TheSameRequestOnTwoNodesIsAdmittedOnceAndRetransmittedOnce) {
  for (int round = 0; round < kRounds; ++round) {
    // Even rounds: the conference's first admission (both nodes create it); odd: it exists.
    const int conference = 100 + round;
    if (round % 2 == 1) {
      ASSERT_EQ(admit(*node_a, request(conference, 0)), "admitted");
    }
    const Admission same = request(conference, 1);
    std::string a, b;
    at_once([&] { a = admit(*node_a, same); }, [&] { b = admit(*node_b, same); });
    const std::multiset<std::string> outcomes{a, b};
    EXPECT_EQ(outcomes, (std::multiset<std::string>{"admitted", "retransmission"}))
        << "round " << round << ": " << a << ", " << b;
    const auto found = node_a->find(same.conference_id);
    ASSERT_TRUE(found);
    EXPECT_EQ(found->members.size(), round % 2 == 1 ? 3u : 2u) << "round " << round;
  }
}

TEST_P(RegistryRaceTest, AnEnvelopeReplayedToTwoNodesAtOnceIsAdmittedOnlyOnce) {
  for (int round = 0; round < kRounds; ++round) {
    const int conference = 200 + round;
    if (round % 2 == 1) {
      ASSERT_EQ(admit(*node_a, request(conference, 0)), "admitted");
    }
    const Admission original = request(conference, 1);
    Admission replay = request(conference, 2);
    replay.envelopes[1] = original.envelopes[1];  // the same responder envelope, another request
    std::string a, b;
    at_once([&] { a = admit(*node_a, original); }, [&] { b = admit(*node_b, replay); });
    const std::multiset<std::string> outcomes{a, b};
    EXPECT_EQ(outcomes, (std::multiset<std::string>{"admitted", "replay"}))
        << "round " << round << ": " << a << ", " << b;
    const auto found = node_b->find(original.conference_id);
    ASSERT_TRUE(found);
    EXPECT_EQ(found->members.size(), round % 2 == 1 ? 3u : 2u) << "round " << round;
  }
}

TEST_P(RegistryRaceTest, MembersAdmittedOnTwoNodesAtOnceAreAllKeptOnce) {
  constexpr int kPerNode = 4;
  for (int round = 0; round < kRounds / 5; ++round) {
    const int conference = 300 + round;
    std::barrier start(2 * kPerNode);
    std::vector<std::string> results(2 * kPerNode);
    std::vector<std::thread> threads;
    for (int t = 0; t < 2 * kPerNode; ++t) {
      threads.emplace_back([&, t] {
        kms::ConferenceRegistry& node = t % 2 == 0 ? *node_a : *node_b;
        start.arrive_and_wait();
        results[t] = admit(node, request(conference, t + 1));
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int t = 0; t < 2 * kPerNode; ++t) EXPECT_EQ(results[t], "admitted") << t;
    const auto found = node_a->find(request(conference, 0).conference_id);
    ASSERT_TRUE(found);
    ASSERT_EQ(found->members.size(), 1u + 2 * kPerNode) << "round " << round;
    std::set<std::string> names;
    for (std::size_t i = 1; i < found->members.size(); ++i) {
      names.insert(found->members[i].member_id);
    }
    EXPECT_EQ(names.size(), static_cast<std::size_t>(2 * kPerNode));
  }
  EXPECT_EQ(node_b->replay_entries(), static_cast<std::size_t>(kRounds / 5 * 2 * kPerNode * 2));
}

TEST_P(RegistryRaceTest, ABindingRacedFromTwoNodesBindsExactlyOneBridge) {
  const kms::ConferenceRegistry::ReleaseHook no_hook = [](const kms::Conference&) {};
  for (int round = 0; round < kRounds; ++round) {
    const Admission a = request(400 + round, 1);
    ASSERT_EQ(admit(*node_a, a), "admitted");
    auto bind = [&](kms::ConferenceRegistry& node, const std::string& bridge) -> std::string {
      try {
        return *node.bind_for_release(a.conference_id, bridge, kNow, no_hook).bridge_id;
      } catch (const kms::ProtocolError& error) {
        return std::string(kms::error_code_name(error.code()));
      }
    };
    std::string one, two;
    at_once([&] { one = bind(*node_a, "sip:bridge1@conf.example.net"); },
            [&] { two = bind(*node_b, "sip:bridge2@conf.example.net"); });
    const std::string winner = one == "bridge_not_authorized" ? two : one;
    EXPECT_TRUE((one == "sip:bridge1@conf.example.net" && two == "bridge_not_authorized") ||
                (two == "sip:bridge2@conf.example.net" && one == "bridge_not_authorized"))
        << "round " << round << ": " << one << ", " << two;
    EXPECT_EQ(node_a->find(a.conference_id)->bridge_id, winner);
    EXPECT_EQ(node_b->find(a.conference_id)->bridge_id, winner);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryRaceTest, KMS_DATABASE_BACKENDS);

}  // namespace
