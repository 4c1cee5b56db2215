// Issue 4: token calls must never stall other connections. kmsd runs on the fault module in
// front of SoftHSM; a delay file makes every C_Decrypt (opening an envelope, on the
// key-request path) slow. While slow key requests are in flight, /healthz and a bridge's
// key release (token calls too, but no C_Decrypt) on other connections are answered first.
// And a SIGTERM while slow requests are in flight answers them before kmsd exits.
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
#include "tls_test_client.h"

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

double pending_requests(const KmsdProcess& kmsd, const TestPki& pki) {
  return fetch_metric(kmsd, pki, "kms_pending_requests").value_or(-1);
}

// kmsd on the fault module in front of the environment's SoftHSM token; every call named in
// the delay file (rewritten with write_delays) is slowed down.
std::unique_ptr<KmsdProcess> start_on_fault_module(KmsdEnvironment& environment,
                                                   const std::string& name,
                                                   const std::string& delay_file,
                                                   ConfigOverrides overrides = {}) {
  overrides.token_module = KMS_FAULT_MODULE_PATH;
  return std::make_unique<KmsdProcess>(
      environment, environment.write_config(name, overrides),
      std::vector<std::string>{"--worker-threads", "4", "--io-threads", "2"},
      std::map<std::string, std::string>{{"KMS_FAULT_TARGET", environment.token().module_path()},
                                         {"KMS_FAULT_DELAY_FILE", delay_file}});
}

// Index of the first line of `log` containing all of `needles`; npos if none.
std::size_t line_with(const std::string& log, std::initializer_list<std::string> needles) {
  std::size_t index = 0;
  for (std::size_t begin = 0; begin < log.size(); ++index) {
    const std::size_t end = std::min(log.find('\n', begin), log.size());
    const std::string_view line(log.data() + begin, end - begin);
    if (std::all_of(needles.begin(), needles.end(),
                    [&](const std::string& needle) { return line.find(needle) != line.npos; })) {
      return index;
    }
    begin = end + 1;
  }
  return std::string::npos;
}

struct Timed {
  unsigned status = 0;
  Clock::time_point answered;
};

TEST(KmsdTokenStallTest, SlowTokenCallsDoNotStallHealthOrOtherClients) {
  auto environment = KmsdEnvironment::create();
  const TestPki& pki = environment->pki();
  const std::string delay_file = environment->dir() + "/fault-delays";
  const auto started = start_on_fault_module(*environment, "stall.toml", delay_file);
  KmsdProcess& kmsd = *started;

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
    const auto result = ue_connection(kmsd, pki)->post_json(
        "/v1/key-request", kms::wire::key_request_to_json(request));
    return Timed{result.status, Clock::now()};
  };
  auto slow_bob = std::async(std::launch::async, slow_request, kBob);
  auto slow_carol = std::async(std::launch::async, slow_request, kCarol);

  // Both are on the workers (inside the slow C_Decrypt or about to be).
  ASSERT_TRUE(wait_until([&] { return pending_requests(kmsd, pki) >= 2; })) << kmsd.log();

  const auto health = ue_connection(kmsd, pki)->get("/healthz");
  const Timed health_answer{health.status, Clock::now()};
  const auto release =
      bridge_connection(kmsd, pki, pki.bridge)
          ->post_json("/v1/bridge/keys", kms::wire::bridge_request_to_json(conference_id));
  const Timed release_answer{release.status, Clock::now()};
  EXPECT_EQ(health_answer.status, 200u);
  ASSERT_EQ(release_answer.status, 200u) << release.body;
  EXPECT_EQ(kms::wire::bridge_release_from_json(release.body).keys.size(), 2u);  // K1, K2

  const Timed bob = slow_bob.get();
  const Timed carol = slow_carol.get();
  EXPECT_EQ(bob.status, 200u);
  EXPECT_EQ(carol.status, 200u);
  // Answered while both slow requests were still in flight (the order of the answers).
  const Clock::time_point first_slow = std::min(bob.answered, carol.answered);
  EXPECT_LT(health_answer.answered, first_slow)
      << "/healthz answered at " << at(health_answer.answered) << ", first slow request at "
      << at(first_slow);
  EXPECT_LT(release_answer.answered, first_slow)
      << "bridge release answered at " << at(release_answer.answered) << ", first slow request at "
      << at(first_slow);

  write_delays(delay_file, "");  // a quick drain at SIGTERM
}

// Issue 9: a token call that never returns. Every worker is stuck in C_Decrypt; kmsd still
// answers /healthz, says 503 token_unavailable on /readyz and on every request that needs the
// token at once (not after a worker frees up), and serves again once the calls return.
TEST(KmsdTokenStallTest, HungTokenIsAnswered503AtOnceAndServedAgainWhenItReturns) {
  auto environment = KmsdEnvironment::create();
  const TestPki& pki = environment->pki();
  const std::string delay_file = environment->dir() + "/fault-delays";
  ConfigOverrides overrides;
  overrides.limits["token_stall_ms"] = "300";
  const auto started = start_on_fault_module(*environment, "hung.toml", delay_file, overrides);
  KmsdProcess& kmsd = *started;
  const client::Secret r_a = client::UeClient::make_nonce();
  const auto admitted = ue_connection(kmsd, pki)->post_json(
      "/v1/key-request", kms::wire::key_request_to_json(key_request(
                             *environment, kAlice, r_a, kBob, client::UeClient::make_nonce())));
  ASSERT_EQ(admitted.status, 200u) << admitted.body;
  const kms::Bytes conference_id = kms::wire::key_response_from_json(admitted.body).conference_id;

  write_delays(delay_file, "C_Decrypt=600000");  // "hung": lowered below, which ends it
  const auto patient_request = [&](const char* invitee) {
    kms::tools::ClientTlsOptions tls;
    tls.ca_file = pki.server_ca;
    tls.timeout = std::chrono::seconds(120);
    kms::tools::HttpsClient http(kms::tools::ServerUrl::parse(kmsd.url()), tls);
    return http
        .post_json("/v1/key-request", kms::wire::key_request_to_json(key_request(
                                          *environment, kAlice, client::UeClient::make_nonce(),
                                          invitee, client::UeClient::make_nonce())))
        .status;
  };
  std::vector<std::future<unsigned>> stuck;
  for (int i = 0; i < 4; ++i) {  // one per worker (--worker-threads 4)
    stuck.push_back(std::async(std::launch::async, patient_request, i % 2 ? kBob : kCarol));
  }
  ASSERT_TRUE(wait_until([&] {
    return fetch_metric(kmsd, pki, "kms_token_oldest_call_milliseconds").value_or(0) > 300 &&
           pending_requests(kmsd, pki) >= 4;
  })) << kmsd.log();

  EXPECT_EQ(ue_connection(kmsd, pki)->get("/healthz").status, 200u);
  // These clients give up after 10 s (TransportError): without the stall check the
  // requests would wait behind the stuck workers.
  const auto ready = ue_connection(kmsd, pki)->get("/readyz");
  ASSERT_EQ(ready.status, 503u) << ready.body;
  EXPECT_NE(ready.body.find("\"token_unavailable\""), std::string::npos) << ready.body;
  EXPECT_EQ(
      https_request(kmsd.port(), pki.server_ca, "GET", "/readyz", "", "").header("Retry-After"),
      "1");
  const auto refused = ue_connection(kmsd, pki)->post_json(
      "/v1/key-request", kms::wire::key_request_to_json(
                             key_request(*environment, kAlice, client::UeClient::make_nonce(), kBob,
                                         client::UeClient::make_nonce())));
  EXPECT_EQ(refused.status, 503u) << refused.body;
  EXPECT_NE(refused.body.find("\"token_unavailable\""), std::string::npos) << refused.body;
  const auto release =
      bridge_connection(kmsd, pki, pki.bridge)
          ->post_json("/v1/bridge/keys", kms::wire::bridge_request_to_json(conference_id));
  EXPECT_EQ(release.status, 503u) << release.body;
  EXPECT_GE(fetch_metric(kmsd, pki, "kms_token_stall_refusals_total").value_or(0), 2);

  write_delays(delay_file, "");  // the token answers again: the stuck calls return
  for (auto& request : stuck) EXPECT_EQ(request.get(), 200u);
  EXPECT_TRUE(wait_until([&] {
    return https_request(kmsd.port(), pki.server_ca, "GET", "/readyz", "", "").status == 200;
  })) << kmsd.log();
  EXPECT_EQ(patient_request(kBob), 200u);
}

TEST(KmsdTokenStallTest, SigtermAnswersTheRequestsInFlightBeforeExiting) {
  auto environment = KmsdEnvironment::create();
  const TestPki& pki = environment->pki();
  const std::string delay_file = environment->dir() + "/fault-delays";
  ConfigOverrides overrides;
  overrides.server["drain_timeout_ms"] = "30000";  // the drain ends when they are answered
  const auto kmsd = start_on_fault_module(*environment, "drain.toml", delay_file, overrides);
  write_delays(delay_file, "C_Decrypt=1500");

  // Two key requests, each on its own keep-alive connection, held in the slow C_Decrypt.
  const auto slow_request = [&](const char* invitee) {
    const client::Secret r_a = client::UeClient::make_nonce();
    const client::Secret r_b = client::UeClient::make_nonce();
    const kms::KeyRequest request = key_request(*environment, kAlice, r_a, invitee, r_b);
    RawTlsConnection connection(kmsd->port(), pki.server_ca);
    const auto exchange = connection.exchange("POST", "/v1/key-request", "application/json",
                                              kms::wire::key_request_to_json(request));
    if (exchange.outcome != RawTlsConnection::Outcome::complete) {
      return std::string(outcome_name(exchange.outcome)) + ": " + exchange.error;
    }
    const RawResponse& response = exchange.response;
    if (response.status != 200) return "status " + std::to_string(response.status);
    if (response.header("Connection") != "close") return std::string("no Connection: close");
    try {
      const auto body = kms::wire::key_response_from_json(response.body);
      (void)ue_client(*environment, invitee)
          .open_responder_response(body.responder_response, r_b, kAlice, kSuite,
                                   body.conference_id);
    } catch (const std::exception& error) {
      return std::string("response does not open: ") + error.what();
    }
    return std::string("ok");
  };
  auto bob = std::async(std::launch::async, slow_request, kBob);
  auto carol = std::async(std::launch::async, slow_request, kCarol);
  ASSERT_TRUE(wait_until([&] { return pending_requests(*kmsd, pki) >= 2; })) << kmsd->log();

  kmsd->signal(SIGTERM);
  // Draining: new connections are refused while the two are still being processed.
  EXPECT_TRUE(wait_until([&] {
    RawTlsConnection probe(kmsd->port(), pki.server_ca);
    return probe.exchange("GET", "/healthz").outcome == RawTlsConnection::Outcome::not_connected;
  }));
  // Both in-flight requests are answered in full, with Connection: close.
  EXPECT_EQ(bob.get(), "ok");
  EXPECT_EQ(carol.get(), "ok");
  EXPECT_EQ(kmsd->terminate(), 0) << kmsd->log();
  const std::string log = kmsd->log();
  // Order of events: the drain began, then the two requests were answered, then it ended.
  const std::size_t signalled = line_with(log, {"msg=\"signal received: draining\""});
  const std::size_t first = line_with(log, {"msg=request ", "path=/v1/key-request ", "status=200"});
  const std::size_t drained = line_with(log, {"msg=drained"});
  ASSERT_NE(signalled, std::string::npos) << log;
  ASSERT_NE(first, std::string::npos) << log;
  ASSERT_NE(drained, std::string::npos) << log;
  EXPECT_LT(signalled, first) << log;
  EXPECT_LT(first, drained) << log;
  EXPECT_EQ(log.find("drain timeout"), std::string::npos) << log;
}

}  // namespace
}  // namespace kmstest
