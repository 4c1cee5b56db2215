// Several kmsd nodes sharing one database behind a real HAProxy (TCP mode, TLS passed
// through, health checks on /readyz): each step of the seed flow on another node, replays
// and races across nodes, a revocation seen by every node, a node killed under load, a node
// whose token holds other keys refused at start, PostgreSQL restarted under load.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "haproxy_process.h"
#include "https_client.h"
#include "key_files.h"
#include "kms/client/bridge_client.h"
#include "kms/client/ue_client.h"
#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "postgres_cluster.h"
#include "tokens/key_database.h"

namespace {

using namespace kmstest;
namespace client = kms::client;
using kms::tools::ClientTlsOptions;
using kms::tools::HttpsClient;
using kms::tools::ServerUrl;

constexpr int kNodes = 3;

std::string error_code(const kms::tools::HttpResult& result) {
  const auto body = kms::wire::error_from_json(result.body);
  return body ? body->error : "";
}

class ClusterTest : public ::testing::Test {
 protected:
  // The backend comes from KMS_TEST_BACKEND (ctest runs the suite twice: SQLite, one file
  // shared by the three processes; PostgreSQL, a server of the test's own).
  static bool on_postgres() {
    const char* backend = std::getenv("KMS_TEST_BACKEND");
    return backend && std::string(backend) == "postgresql";
  }

  static void SetUpTestSuite() {
    environment_ = KmsdEnvironment::create().release();
    if (on_postgres()) {
      postgres_ = new testsupport::PostgresCluster();
      database_url_ = postgres_->create_database() + "&pool_size=4";
      // The identities kms-provision put into the environment's SQLite file, moved to the
      // server (as an operator's migration would).
      tokens::KeyDatabase from(environment_->dir() + "/kms.db");
      tokens::KeyDatabase to(database_url_);
      for (const tokens::IdentityRecord& record : from.list()) to.insert(record);
    }
    for (int n = 1; n <= kNodes; ++n) {
      ConfigOverrides overrides;
      overrides.database_url = database_url_;
      overrides.server["node_name"] = "\"" + node_name(n) + "\"";
      configs_[n] = environment_->write_config(node_name(n) + ".toml", overrides);
      nodes_[n] = new KmsdProcess(*environment_, configs_[n]);
      ports_[n] = nodes_[n]->port();
    }
    if (HaproxyProcess::available()) {
      std::vector<BalancedNode> balanced;
      for (int n = 1; n <= kNodes; ++n) balanced.push_back({node_name(n), ports_[n]});
      balancer_ = new HaproxyProcess(environment_->dir(), balanced, environment_->pki().server_ca);
    }
  }
  static void TearDownTestSuite() {
    delete balancer_;
    balancer_ = nullptr;
    for (auto& [n, node] : nodes_) delete node;
    nodes_.clear();
    delete environment_;
    environment_ = nullptr;
    delete postgres_;
    postgres_ = nullptr;
  }
  void SetUp() override {
    // A test that killed a node restarts it; every test starts with all nodes serving.
    for (int n = 1; n <= kNodes; ++n) {
      if (!nodes_[n]->running()) restart(n);
    }
    if (balancer_) {
      for (int n = 1; n <= kNodes; ++n) {
        ASSERT_TRUE(balancer_->wait_for_status(node_name(n), "UP"))
            << node_name(n) << " is " << balancer_->node_status(node_name(n)) << "\n"
            << balancer_->log();
      }
    }
  }

  static std::string node_name(int n) { return "node" + std::to_string(n); }
  // The nodes' database as a [database] url (SQLite: the environment's file).
  static std::string shared_database() {
    return database_url_.empty() ? environment_->dir() + "/kms.db" : database_url_;
  }

  // kms-provision on the nodes' database.
  static testsupport::CommandResult provision(std::vector<std::string> args) {
    if (!database_url_.empty()) args.insert(args.begin(), {"--database", database_url_});
    return environment_->provision(std::move(args));
  }

  // Starts node n again on the port it had, so the balancer finds it where it was.
  static void restart(int n) {
    delete nodes_[n];
    nodes_[n] = new KmsdProcess(*environment_, configs_[n],
                                {"--listen", "127.0.0.1:" + std::to_string(ports_[n])});
  }

  static std::string url_of(std::uint16_t port) {
    return "https://127.0.0.1:" + std::to_string(port);
  }
  static std::unique_ptr<HttpsClient> ue_at(std::uint16_t port) {
    ClientTlsOptions tls;
    tls.ca_file = environment_->pki().server_ca;
    return std::make_unique<HttpsClient>(ServerUrl::parse(url_of(port)), tls);
  }
  static std::unique_ptr<HttpsClient> bridge_at(std::uint16_t port) {
    ClientTlsOptions tls;
    tls.ca_file = environment_->pki().server_ca;
    tls.cert_file = environment_->pki().bridge.cert;
    tls.key_file = environment_->pki().bridge.key;
    return std::make_unique<HttpsClient>(ServerUrl::parse(url_of(port)), tls);
  }

  static kms::tools::HttpResult post_request(std::uint16_t port, const kms::KeyRequest& request) {
    return ue_at(port)->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
  }

  // What the chair and one invitee open from a 200 response.
  struct Opened {
    kms::Bytes conference_id;
    client::MediaKey chair_key;   // K1
    client::MediaKey member_key;  // Kn
  };
  static Opened open(const kms::tools::HttpResult& result, const std::string& invitee,
                     const client::Secret& r_a, const client::Secret& r_b) {
    const kms::KeyResponse response = kms::wire::key_response_from_json(result.body);
    return {response.conference_id,
            ue_client(*environment_, kAlice)
                .open_chair_response(response.chair_response, r_a, invitee, kSuite),
            ue_client(*environment_, invitee)
                .open_responder_response(response.responder_response, r_b, kAlice, kSuite,
                                         response.conference_id)};
  }

  // The bridge's release of a conference, opened: member id -> media key.
  static std::map<std::string, client::MediaKey> release(std::uint16_t port,
                                                         const kms::Bytes& conference_id,
                                                         unsigned* status = nullptr) {
    const auto result = bridge_at(port)->post_json(
        "/v1/bridge/keys", kms::wire::bridge_request_to_json(conference_id));
    if (status) *status = result.status;
    std::map<std::string, client::MediaKey> keys;
    if (result.status != 200) {
      if (!status) ADD_FAILURE() << "release: " << result.status << " " << result.body;
      return keys;
    }
    const kms::BridgeRelease released = kms::wire::bridge_release_from_json(result.body);
    const client::BridgeClient bridge(kBridgeId, environment_->root_key(kBridgeId),
                                      profile_of(environment_->profile()));
    for (const auto& item : released.keys) {
      keys[item.member_id] =
          bridge.open(released.conference_id,
                      {item.member_id, item.role, item.key_id, item.suite, item.wrapped});
    }
    return keys;
  }

  // The seed flow: B's request on `b_port`, C's on `c_port`, the bridge's fetch on
  // `bridge_port`; every party's key equal to the bridge's copy, K1 the same for B and C.
  static void seed_flow(std::uint16_t b_port, std::uint16_t c_port, std::uint16_t bridge_port) {
    const client::Secret r_a = client::UeClient::make_nonce();
    const client::Secret r_b = client::UeClient::make_nonce();
    const client::Secret r_c = client::UeClient::make_nonce();
    const auto to_bob = post_request(b_port, key_request(*environment_, kAlice, r_a, kBob, r_b));
    ASSERT_EQ(to_bob.status, 200u) << to_bob.body;
    const auto to_carol =
        post_request(c_port, key_request(*environment_, kAlice, r_a, kCarol, r_c));
    ASSERT_EQ(to_carol.status, 200u) << to_carol.body;
    const Opened bob = open(to_bob, kBob, r_a, r_b);
    const Opened carol = open(to_carol, kCarol, r_a, r_c);
    ASSERT_EQ(bob.conference_id, carol.conference_id);
    EXPECT_TRUE(client::equal_constant_time(bob.chair_key.key, carol.chair_key.key))
        << "K1 differs between the nodes";
    auto keys = release(bridge_port, bob.conference_id);
    ASSERT_EQ(keys.size(), 3u);
    EXPECT_TRUE(client::equal_constant_time(keys[kAlice].key, bob.chair_key.key));
    EXPECT_TRUE(client::equal_constant_time(keys[kBob].key, bob.member_key.key));
    EXPECT_TRUE(client::equal_constant_time(keys[kCarol].key, carol.member_key.key));
  }

  static inline KmsdEnvironment* environment_ = nullptr;
  static inline std::map<int, KmsdProcess*> nodes_;
  static inline std::map<int, std::string> configs_;
  static inline std::map<int, std::uint16_t> ports_;
  static inline HaproxyProcess* balancer_ = nullptr;
  static inline testsupport::PostgresCluster* postgres_ = nullptr;
  static inline std::string database_url_;  // empty: SQLite (the environment's kms.db)
};

TEST_F(ClusterTest, EachStepOfTheSeedFlowOnAnotherNode) {
  seed_flow(ports_[1], ports_[2], ports_[3]);
  seed_flow(ports_[3], ports_[1], ports_[2]);
}

TEST_F(ClusterTest, SeedFlowThroughTheBalancer) {
  if (!balancer_) GTEST_SKIP() << "haproxy is not installed (scripts/setup installs it)";
  // Round robin over three nodes: consecutive connections land on different nodes.
  for (int round = 0; round < 3; ++round) {
    seed_flow(balancer_->port(), balancer_->port(), balancer_->port());
  }
}

TEST_F(ClusterTest, AnEnvelopeUsedThroughOneNodeIsAReplayOnEveryOther) {
  const client::Secret r_a = client::UeClient::make_nonce();
  const client::Secret r_b = client::UeClient::make_nonce();
  const kms::KeyRequest first = key_request(*environment_, kAlice, r_a, kBob, r_b);
  const auto admitted = post_request(ports_[1], first);
  ASSERT_EQ(admitted.status, 200u) << admitted.body;
  // The same E_A with a new E_B from B: a different request reusing an envelope.
  kms::KeyRequest reuse = first;
  reuse.responder_envelope =
      ue_client(*environment_, kBob)
          .responder_envelope(client::UeClient::make_nonce(), kAlice, kSuite);
  for (int n : {2, 3}) {
    const auto refused = post_request(ports_[n], reuse);
    EXPECT_EQ(refused.status, 409u) << "node" << n << ": " << refused.body;
    EXPECT_EQ(error_code(refused), "replay") << "node" << n;
  }
  // The identical request is a retransmission on any node: the same keys again.
  const Opened original = open(admitted, kBob, r_a, r_b);
  for (int n : {2, 3}) {
    const auto again = post_request(ports_[n], first);
    ASSERT_EQ(again.status, 200u) << "node" << n << ": " << again.body;
    const Opened repeated = open(again, kBob, r_a, r_b);
    EXPECT_EQ(repeated.conference_id, original.conference_id);
    EXPECT_TRUE(client::equal_constant_time(repeated.member_key.key, original.member_key.key));
  }
}

TEST_F(ClusterTest, TheSameEnvelopeRacedToTwoNodesIsAdmittedExactlyOnce) {
  constexpr int kRounds = 25;
  for (int round = 0; round < kRounds; ++round) {
    const client::Secret r_a = client::UeClient::make_nonce();
    const kms::KeyRequest one =
        key_request(*environment_, kAlice, r_a, kBob, client::UeClient::make_nonce());
    kms::KeyRequest other = one;
    other.responder_envelope =
        ue_client(*environment_, kBob)
            .responder_envelope(client::UeClient::make_nonce(), kAlice, kSuite);
    std::atomic<int> ready{0};
    unsigned status_one = 0, status_other = 0;
    std::string body_one, body_other;
    auto send = [&](int node, const kms::KeyRequest& request, unsigned& status, std::string& body) {
      auto connection = ue_at(ports_[node]);
      ready.fetch_add(1);
      while (ready.load() < 2) std::this_thread::yield();
      const auto result =
          connection->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
      status = result.status;
      body = result.body;
    };
    std::thread a([&] { send(1 + round % kNodes, one, status_one, body_one); });
    std::thread b([&] { send(1 + (round + 1) % kNodes, other, status_other, body_other); });
    a.join();
    b.join();
    const std::multiset<unsigned> statuses = {status_one, status_other};
    ASSERT_EQ(statuses, (std::multiset<unsigned>{200u, 409u}))
        << "round " << round << ": " << body_one << " / " << body_other;
  }
}

TEST_F(ClusterTest, MembersOfOneConferenceAdmittedOnTwoNodesAtOnceAreAllReleased) {
  constexpr int kRounds = 15;
  for (int round = 0; round < kRounds; ++round) {
    const client::Secret r_a = client::UeClient::make_nonce();
    const client::Secret r_b = client::UeClient::make_nonce();
    const client::Secret r_c = client::UeClient::make_nonce();
    const kms::KeyRequest to_bob = key_request(*environment_, kAlice, r_a, kBob, r_b);
    const kms::KeyRequest to_carol = key_request(*environment_, kAlice, r_a, kCarol, r_c);
    kms::tools::HttpResult bob_result, carol_result;
    std::atomic<int> ready{0};
    auto send = [&](int node, const kms::KeyRequest& request, kms::tools::HttpResult& result) {
      auto connection = ue_at(ports_[node]);
      ready.fetch_add(1);
      while (ready.load() < 2) std::this_thread::yield();
      result = connection->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
    };
    std::thread b([&] { send(1, to_bob, bob_result); });
    std::thread c([&] { send(2, to_carol, carol_result); });
    b.join();
    c.join();
    ASSERT_EQ(bob_result.status, 200u) << bob_result.body;
    ASSERT_EQ(carol_result.status, 200u) << carol_result.body;
    const Opened bob = open(bob_result, kBob, r_a, r_b);
    const Opened carol = open(carol_result, kCarol, r_a, r_c);
    ASSERT_EQ(bob.conference_id, carol.conference_id);
    auto keys = release(ports_[3], bob.conference_id);
    ASSERT_EQ(keys.size(), 3u) << "round " << round << ": a member admitted on one node is lost";
    EXPECT_TRUE(client::equal_constant_time(keys[kBob].key, bob.member_key.key));
    EXPECT_TRUE(client::equal_constant_time(keys[kCarol].key, carol.member_key.key));
  }
}

TEST_F(ClusterTest, ARevocationMadeThroughTheDatabaseTakesEffectOnEveryNode) {
  const std::string dave = "sip:dave@ims.example.net";
  const std::string key_file = environment_->dir() + "/dave.key";
  const auto added =
      provision({"subscriber", "add", dave, "--insecure-plaintext-export", "--out", key_file});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const client::UeClient dave_ue(dave, kms::tools::read_root_key(key_file, std::nullopt), 1,
                                 profile_of(environment_->profile()));
  const auto request_for_dave = [&] {
    const client::Secret r_a = client::UeClient::make_nonce();
    return kms::KeyRequest{
        kAlice, dave, ue_client(*environment_, kAlice).chair_envelope(r_a, dave, kSuite),
        dave_ue.responder_envelope(client::UeClient::make_nonce(), kAlice, kSuite)};
  };
  for (int n = 1; n <= kNodes; ++n) {
    const auto served = post_request(ports_[n], request_for_dave());
    ASSERT_EQ(served.status, 200u) << "node" << n << ": " << served.body;
  }
  const auto revoked = provision({"subscriber", "revoke", dave});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  // Every node had dave's key cached; the next request on each is refused.
  for (int n = 1; n <= kNodes; ++n) {
    const auto refused = post_request(ports_[n], request_for_dave());
    EXPECT_EQ(refused.status, 403u) << "node" << n << ": " << refused.body;
    EXPECT_EQ(error_code(refused), "subscriber_revoked") << "node" << n;
  }
}

TEST_F(ClusterTest, AKilledNodeLeavesTheRotationAndComesBackWhenRestarted) {
  if (!balancer_) GTEST_SKIP() << "haproxy is not installed (scripts/setup installs it)";
  nodes_[2]->signal(SIGKILL);
  ASSERT_TRUE(balancer_->wait_for_status("node2", "DOWN")) << balancer_->node_status("node2");
  // With node2 out of the rotation every request through the balancer is served.
  for (int i = 0; i < 6; ++i) {
    const auto result = post_request(
        balancer_->port(), key_request(*environment_, kAlice, client::UeClient::make_nonce(), kBob,
                                       client::UeClient::make_nonce()));
    EXPECT_EQ(result.status, 200u) << result.body;
  }
  restart(2);
  EXPECT_TRUE(balancer_->wait_for_status("node2", "UP")) << balancer_->node_status("node2");
}

// Clients that retransmit through the balancer until they get an answer (as a UE does) while
// a node is SIGKILLed: every admission a client saw succeed is released to the bridge.
TEST_F(ClusterTest, ANodeKilledUnderLoadLosesNoAcknowledgedAdmission) {
  if (!balancer_) GTEST_SKIP() << "haproxy is not installed (scripts/setup installs it)";
  constexpr int kClients = 4;
  constexpr int kPerClient = 25;
  struct Acknowledged {
    kms::Bytes conference_id;
    client::MediaKey bob_key;
  };
  std::mutex mutex;
  std::vector<Acknowledged> acknowledged;
  std::atomic<int> answered{0};
  std::atomic<int> transport_failures{0};
  std::vector<std::string> unexpected;
  auto client_loop = [&] {
    for (int i = 0; i < kPerClient; ++i) {
      const client::Secret r_a = client::UeClient::make_nonce();
      const client::Secret r_b = client::UeClient::make_nonce();
      const kms::KeyRequest request = key_request(*environment_, kAlice, r_a, kBob, r_b);
      for (int attempt = 0; attempt < 50; ++attempt) {
        kms::tools::HttpResult result;
        try {
          result = post_request(balancer_->port(), request);
        } catch (const kms::tools::TransportError&) {
          transport_failures.fetch_add(1);
          continue;  // the connection died with its node: retransmit the same request
        }
        if (result.status == 503) continue;
        std::lock_guard lock(mutex);
        if (result.status != 200) {
          unexpected.push_back(std::to_string(result.status) + " " + result.body);
          break;
        }
        const Opened opened = open(result, kBob, r_a, r_b);
        acknowledged.push_back({opened.conference_id, opened.member_key});
        break;
      }
      answered.fetch_add(1);
    }
  };
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back(client_loop);
  ASSERT_TRUE(wait_until([&] { return answered.load() >= kClients * kPerClient / 4; }));
  nodes_[1]->signal(SIGKILL);
  ASSERT_TRUE(wait_until([&] { return answered.load() >= kClients * kPerClient / 2; }));
  restart(1);
  for (auto& thread : clients) thread.join();

  EXPECT_TRUE(unexpected.empty()) << unexpected.front();
  ASSERT_EQ(acknowledged.size(), static_cast<std::size_t>(kClients * kPerClient));
  for (const auto& admission : acknowledged) {
    auto keys = release(ports_[3], admission.conference_id);
    ASSERT_EQ(keys.size(), 2u);
    EXPECT_TRUE(client::equal_constant_time(keys[kBob].key, admission.bob_key.key));
  }
  // Every node's audit log is an intact hash chain, the killed node's too; on PostgreSQL
  // each holds the head its node anchored there (one anchor per node). One SQLite file
  // holds one anchor, which three nodes overwrite: there the chains alone are checked.
  for (int n = 1; n <= kNodes; ++n) {
    std::vector<std::string> verify = {KMS_AUDIT_BIN, "verify",
                                       environment_->audit_path(node_name(n) + ".toml")};
    if (on_postgres()) {
      verify.insert(verify.end(), {"--anchor-db", database_url_, "--node", node_name(n)});
    }
    const auto verified = testsupport::run_command(verify);
    EXPECT_EQ(verified.exit_code, 0) << node_name(n) << ": " << verified.out << verified.err;
    if (on_postgres()) {
      EXPECT_NE(verified.out.find("anchor"), std::string::npos) << verified.out;
    }
  }
}

// A fourth node whose token was initialised on its own (other keys than the three's) is
// refused at start with the key check's error (exit 3), before it listens; the three go on.
TEST_F(ClusterTest, ANodeWhoseTokenHoldsOtherKeysIsRefusedAtStart) {
  auto stranger = KmsdEnvironment::create();
  ConfigOverrides overrides;
  overrides.database_url = shared_database();
  overrides.server["node_name"] = "\"node4\"";
  const std::string config = stranger->write_config("node4.toml", overrides);
  const auto refused = testsupport::run_command(
      {"timeout", "120", KMSD_BIN, "--config", config, "--listen", "127.0.0.1:0"},
      stranger->token().environment());
  EXPECT_EQ(refused.exit_code, 3) << refused.err;
  EXPECT_NE(refused.err.find("this token holds another key than the database records"),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("kms/master"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.err.find("\"listening\""), std::string::npos) << refused.err;
  // The nodes that hold the recorded keys match them (one of them recorded them, on
  // PostgreSQL, where kms-provision init wrote into another database) and keep serving.
  for (int n = 1; n <= kNodes; ++n) {
    const std::string log = nodes_[n]->log();
    EXPECT_TRUE(log.find("the token's KMS keys match the values recorded") != std::string::npos ||
                log.find("this token's values are now recorded") != std::string::npos)
        << node_name(n) << ": " << log;
  }
  seed_flow(ports_[1], ports_[2], ports_[3]);
}

// Issue 7: PostgreSQL restarted under load through the balancer. Every answer meanwhile is
// a 503 (never a 500, no connection cut: no node crashes), the nodes reconnect by
// themselves (the same processes serve afterwards), every admission a client saw succeed
// is released to its bridge afterwards, and every node's audit chain verifies against its
// anchor.
TEST_F(ClusterTest, PostgresRestartedUnderLoadIsAnsweredWith503AndLosesNothingAcknowledged) {
  if (!on_postgres()) GTEST_SKIP() << "PostgreSQL only (KMS_TEST_BACKEND=postgresql)";
  constexpr int kClients = 4;
  constexpr int kPerClient = 20;
  std::map<int, pid_t> pids;
  for (int n = 1; n <= kNodes; ++n) pids[n] = nodes_[n]->pid();
  // Through the balancer when there is one, else round robin over the nodes.
  std::atomic<int> next_node{0};
  const auto entry = [&] {
    return balancer_ ? balancer_->port() : ports_[1 + next_node.fetch_add(1) % kNodes];
  };
  struct Acknowledged {
    kms::Bytes conference_id;
    client::MediaKey bob_key;
  };
  std::mutex mutex;
  std::vector<Acknowledged> acknowledged;
  std::vector<std::string> unexpected;
  std::atomic<int> answered{0};
  std::atomic<int> unavailable{0};  // 503 answers
  std::atomic<int> transport_failures{0};
  std::atomic<bool> give_up{false};
  auto client_loop = [&] {
    for (int i = 0; i < kPerClient && !give_up; ++i) {
      const client::Secret r_a = client::UeClient::make_nonce();
      const client::Secret r_b = client::UeClient::make_nonce();
      const kms::KeyRequest request = key_request(*environment_, kAlice, r_a, kBob, r_b);
      while (!give_up) {  // retransmit the same request until it is answered (as a UE does)
        kms::tools::HttpResult result;
        try {
          result = post_request(entry(), request);
        } catch (const kms::tools::TransportError& error) {
          // No node dies here: a connection cut is a failure (the request is retransmitted).
          transport_failures.fetch_add(1);
          std::lock_guard lock(mutex);
          unexpected.push_back(std::string("transport: ") + error.what());
          continue;
        }
        if (result.status == 503) {
          unavailable.fetch_add(1);
          const std::string code = error_code(result);
          if (code != "overloaded") {
            std::lock_guard lock(mutex);
            unexpected.push_back("503 " + result.body);
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pacing, not asserted
          continue;
        }
        std::lock_guard lock(mutex);
        if (result.status != 200) {
          unexpected.push_back(std::to_string(result.status) + " " + result.body);
          break;
        }
        const Opened opened = open(result, kBob, r_a, r_b);
        acknowledged.push_back({opened.conference_id, opened.member_key});
        break;
      }
      answered.fetch_add(1);
    }
  };
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back(client_loop);
  const bool loaded = wait_until([&] { return answered.load() >= kClients * kPerClient / 4; });
  const int before_outage = answered.load();
  postgres_->stop();
  // The outage is seen: every node answers 503 overloaded to a request sent to it directly.
  bool all_refused = loaded;
  for (int n = 1; n <= kNodes && all_refused; ++n) {
    const auto refused =
        post_request(ports_[n], key_request(*environment_, kAlice, client::UeClient::make_nonce(),
                                            kBob, client::UeClient::make_nonce()));
    EXPECT_EQ(refused.status, 503u) << node_name(n) << ": " << refused.body;
    EXPECT_EQ(error_code(refused), "overloaded") << refused.body;
    all_refused = refused.status == 503;
  }
  const bool outage_seen = wait_until([&] { return unavailable.load() >= kClients; });
  postgres_->start();
  if (!loaded || !outage_seen || !all_refused) give_up = true;
  const bool finished =
      wait_until([&] { return answered.load() == kClients * kPerClient; }, std::chrono::minutes(3));
  if (!finished) give_up = true;
  for (auto& thread : clients) thread.join();
  ASSERT_TRUE(loaded) << "no load before the outage";
  ASSERT_TRUE(outage_seen) << "the clients saw no 503 during the outage";
  ASSERT_TRUE(finished) << "the nodes did not serve again after PostgreSQL came back";
  EXPECT_LT(before_outage, kClients * kPerClient) << "the outage came after the load";

  EXPECT_TRUE(unexpected.empty()) << unexpected.size()
                                  << " unexpected answers, first: " << unexpected.front();
  EXPECT_EQ(transport_failures.load(), 0);
  // The same processes, reconnected by themselves.
  for (int n = 1; n <= kNodes; ++n) {
    EXPECT_TRUE(nodes_[n]->running()) << node_name(n) << "\n" << nodes_[n]->log();
    EXPECT_EQ(nodes_[n]->pid(), pids[n]) << node_name(n) << " was restarted";
  }
  ASSERT_EQ(acknowledged.size(), static_cast<std::size_t>(kClients * kPerClient));
  for (const auto& admission : acknowledged) {
    auto keys = release(ports_[1 + next_node.fetch_add(1) % kNodes], admission.conference_id);
    ASSERT_EQ(keys.size(), 2u);
    EXPECT_TRUE(client::equal_constant_time(keys[kBob].key, admission.bob_key.key));
  }
  for (int n = 1; n <= kNodes; ++n) {
    const auto verified = testsupport::run_command(
        {KMS_AUDIT_BIN, "verify", environment_->audit_path(node_name(n) + ".toml"), "--anchor-db",
         database_url_, "--node", node_name(n)});
    EXPECT_EQ(verified.exit_code, 0) << node_name(n) << ": " << verified.out << verified.err;
    EXPECT_NE(verified.out.find("anchor"), std::string::npos) << verified.out;
  }
}

}  // namespace
