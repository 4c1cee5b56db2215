// Issue 4: token calls must never stall other connections. kmsd runs on the fault module in
// front of SoftHSM; a delay file makes every C_Decrypt (opening an envelope, on the
// key-request path) slow. While slow key requests are in flight, /healthz and a bridge's
// key release (token calls too, but no C_Decrypt) on other connections are answered first.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"

namespace kmstest {
namespace {

using Clock = std::chrono::steady_clock;
namespace client = kms::client;

constexpr std::chrono::milliseconds kSlowDecrypt{2500};

// Replaced with a rename: the fault module never reads half a file.
void write_delays(const std::string& path, const std::string& delays) {
  std::ofstream(path + ".tmp") << delays << "\n";
  ASSERT_EQ(std::rename((path + ".tmp").c_str(), path.c_str()), 0);
}

long pending_requests(const KmsdProcess& kmsd, const TestPki& pki) {
  const auto metrics = ue_connection(kmsd, pki)->get("/metrics");
  const std::string name = "\nkms_pending_requests ";
  const auto at = metrics.body.find(name);
  return at == std::string::npos ? -1 : std::stol(metrics.body.substr(at + name.size()));
}

struct Timed {
  unsigned status = 0;
  Clock::time_point answered;
};

TEST(KmsdTokenStallTest, SlowTokenCallsDoNotStallHealthOrOtherClients) {
  auto environment = KmsdEnvironment::create();
  const TestPki& pki = environment->pki();
  ConfigOverrides overrides;
  overrides.token_module = KMS_FAULT_MODULE_PATH;
  const std::string delay_file = environment->dir() + "/fault-delays";
  KmsdProcess kmsd(*environment, environment->write_config("stall.toml", overrides),
                   {"--worker-threads", "4", "--io-threads", "2"},
                   {{"KMS_FAULT_TARGET", environment->token().module_path()},
                    {"KMS_FAULT_DELAY_FILE", delay_file}});

  // A conference admitted before the token turns slow: the bridge fetches its keys later.
  const client::Secret r_a = client::UeClient::make_nonce();
  const auto admitted = ue_connection(kmsd, pki)->post_json(
      "/v1/key-request", kms::wire::key_request_to_json(key_request(
                             *environment, kAlice, r_a, kBob, client::UeClient::make_nonce())));
  ASSERT_EQ(admitted.status, 200u) << admitted.body;
  const kms::Bytes conference_id = kms::wire::key_response_from_json(admitted.body).conference_id;

  write_delays(delay_file, "C_Decrypt=" + std::to_string(kSlowDecrypt.count()));
  const auto slowed = Clock::now();
  const auto at = [&](Clock::time_point t) {  // for failure messages
    return std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(t - slowed).count()) +
           " ms";
  };
  const auto slow_request = [&](const char* invitee) {
    const kms::KeyRequest request =
        key_request(*environment, kAlice, client::UeClient::make_nonce(), invitee,
                    client::UeClient::make_nonce());
    const auto started = Clock::now();
    const auto result = ue_connection(kmsd, pki)->post_json(
        "/v1/key-request", kms::wire::key_request_to_json(request));
    return std::make_pair(Timed{result.status, Clock::now()}, Clock::now() - started);
  };
  auto slow_bob = std::async(std::launch::async, slow_request, kBob);
  auto slow_carol = std::async(std::launch::async, slow_request, kCarol);

  // Both are on the workers (inside the slow C_Decrypt or about to be).
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  while (pending_requests(kmsd, pki) < 2 && Clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(pending_requests(kmsd, pki), 2) << kmsd.log();

  const auto health = ue_connection(kmsd, pki)->get("/healthz");
  const Timed health_answer{health.status, Clock::now()};
  const auto release =
      bridge_connection(kmsd, pki, pki.bridge)
          ->post_json("/v1/bridge/keys", kms::wire::bridge_request_to_json(conference_id));
  const Timed release_answer{release.status, Clock::now()};
  EXPECT_EQ(health_answer.status, 200u);
  ASSERT_EQ(release_answer.status, 200u) << release.body;
  EXPECT_EQ(kms::wire::bridge_release_from_json(release.body).keys.size(), 2u);  // K1, K2

  const auto [bob, bob_took] = slow_bob.get();
  const auto [carol, carol_took] = slow_carol.get();
  EXPECT_EQ(bob.status, 200u);
  EXPECT_EQ(carol.status, 200u);
  // The delay really was in effect: otherwise the ordering below proves nothing.
  EXPECT_GE(bob_took, kSlowDecrypt);
  EXPECT_GE(carol_took, kSlowDecrypt);
  // Answered while both slow requests were still in flight.
  const Clock::time_point first_slow = std::min(bob.answered, carol.answered);
  EXPECT_LT(health_answer.answered, first_slow)
      << "/healthz answered at " << at(health_answer.answered) << ", first slow request at "
      << at(first_slow);
  EXPECT_LT(release_answer.answered, first_slow)
      << "bridge release answered at " << at(release_answer.answered) << ", first slow request at "
      << at(first_slow);

  write_delays(delay_file, "");  // a quick drain at SIGTERM
}

}  // namespace
}  // namespace kmstest
