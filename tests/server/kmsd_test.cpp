// kmsd end to end over real TLS on loopback, against a fresh SoftHSM token: the seed flow
// with SRTP media, mutual-TLS refusals, hostile clients, audit fail-closed, restart, reload.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "https_client.h"
#include "key_files.h"
#include "kms/audit/audit_verify.h"
#include "kms/client/bridge_client.h"
#include "kms/client/ue_client.h"
#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "sanitizer_build.h"
#include "srtp_media.h"
#include "tls_test_client.h"

namespace {

using namespace kmstest;
namespace client = kms::client;
namespace fs = std::filesystem;

std::vector<std::string> audit_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::size_t count_events(const std::string& path, const std::string& event) {
  std::size_t n = 0;
  for (const auto& line : audit_lines(path)) {
    if (line.find("\"event\":\"" + event + "\"") != std::string::npos) ++n;
  }
  return n;
}

// The UE side of one conference: A's R_A and the keys each party ends up with.
struct Conference {
  client::Secret r_a;
  kms::Bytes conference_id;
  std::map<std::string, client::MediaKey> keys;  // A (K1), B (K2), C (K3)
  std::vector<client::MediaKey> chair_keys;      // K1 as opened from each invitee's response
};

class KmsdTest : public SharedKmsdTest<KmsdTest> {
 protected:
  static client::UeClient ue(const std::string& identity) {
    return ue_client(*environment_, identity);
  }

  // Steps 2-8 for one invitee, over HTTPS.
  static void invite(const KmsdProcess& kmsd, Conference& conference, const std::string& invitee) {
    const client::UeClient chair = ue(kAlice);
    const client::UeClient responder = ue(invitee);
    const client::Secret r_b = client::UeClient::make_nonce();
    const kms::KeyRequest request =
        key_request(*environment_, kAlice, conference.r_a, invitee, r_b);
    auto http = ue_connection(kmsd, environment_->pki());
    const auto result = http->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
    ASSERT_EQ(result.status, 200u) << result.body;
    const kms::KeyResponse response = kms::wire::key_response_from_json(result.body);
    client::MediaKey member_key = responder.open_responder_response(
        response.responder_response, r_b, kAlice, kSuite, response.conference_id);
    client::MediaKey chair_key =
        chair.open_chair_response(response.chair_response, conference.r_a, invitee, kSuite);
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    conference.conference_id = response.conference_id;
    conference.keys[invitee] = std::move(member_key);
    conference.chair_keys.push_back(std::move(chair_key));
  }

  static kms::BridgeRelease fetch(const KmsdProcess& kmsd, const kms::Bytes& conference_id,
                                  unsigned expected_status = 200, std::string* error = nullptr) {
    auto http = bridge_connection(kmsd, environment_->pki(), environment_->pki().bridge);
    const auto result =
        http->post_json("/v1/bridge/keys", kms::wire::bridge_request_to_json(conference_id));
    EXPECT_EQ(result.status, expected_status) << result.body;
    if (error) {
      auto body = kms::wire::error_from_json(result.body);
      *error = body ? body->error : "";
    }
    if (result.status != 200) return {};
    return kms::wire::bridge_release_from_json(result.body);
  }

  static Conference admit_conference(const KmsdProcess& kmsd) {
    Conference conference;
    conference.r_a = client::UeClient::make_nonce();
    invite(kmsd, conference, kBob);
    return conference;
  }
};

kms::media::MediaKeyMaterial material(const client::MediaKey& key) {
  return {key.suite, key.master_key, key.master_salt};
}

TEST_F(KmsdTest, SeedFlowOverHttpsWithSrtpMedia) {
  Conference conference;
  conference.r_a = client::UeClient::make_nonce();
  // A invites B and C concurrently (steps 2-8 and 9-15).
  std::thread to_bob([&] { invite(*kmsd_, conference, kBob); });
  std::thread to_carol([&] { invite(*kmsd_, conference, kCarol); });
  to_bob.join();
  to_carol.join();
  ASSERT_EQ(conference.chair_keys.size(), 2u);
  ASSERT_TRUE(
      client::equal_constant_time(conference.chair_keys[0].key, conference.chair_keys[1].key))
      << "K1 differs between B's and C's requests";
  conference.keys[kAlice] = conference.chair_keys[0];

  // Figure 20: the bridge fetches K1..K3 over mutual TLS.
  const kms::BridgeRelease release = fetch(*kmsd_, conference.conference_id);
  ASSERT_EQ(release.keys.size(), 3u);
  const client::BridgeClient bridge(kBridgeId, environment_->root_key(kBridgeId),
                                    profile_of(environment_->profile()));
  std::map<std::string, client::MediaKey> bridge_keys;
  for (const auto& item : release.keys) {
    bridge_keys[item.member_id] = bridge.open(
        release.conference_id, {item.member_id, item.role, item.key_id, item.suite, item.wrapped});
  }
  for (const char* party : {kAlice, kBob, kCarol}) {
    ASSERT_TRUE(bridge_keys.contains(party)) << party;
    EXPECT_TRUE(client::equal_constant_time(bridge_keys[party].key, conference.keys[party].key))
        << party << "'s key differs from the bridge's";
  }
  EXPECT_FALSE(client::equal_constant_time(conference.keys[kAlice].key, conference.keys[kBob].key));
  EXPECT_FALSE(client::equal_constant_time(conference.keys[kBob].key, conference.keys[kCarol].key));
  EXPECT_FALSE(
      client::equal_constant_time(conference.keys[kAlice].key, conference.keys[kCarol].key));

  // Media: A -> bridge (K1) -> B (K2), C (K3), real SRTP over UDP loopback.
  constexpr int kPackets = 30;
  const std::string text = "media from alice";
  kms::media::UdpSocket bob_socket, carol_socket, bridge_socket, alice_socket;
  auto bob = std::async(std::launch::async, [&] {
    return kms::media::run_receiver(bob_socket, material(conference.keys[kBob]), kPackets, text,
                                    kPatience);
  });
  auto carol = std::async(std::launch::async, [&] {
    return kms::media::run_receiver(carol_socket, material(conference.keys[kCarol]), kPackets, text,
                                    kPatience);
  });
  auto relay = std::async(std::launch::async, [&] {
    return kms::media::run_relay(
        bridge_socket, material(bridge_keys[kAlice]),
        {{{"127.0.0.1", bob_socket.port()}, material(bridge_keys[kBob])},
         {{"127.0.0.1", carol_socket.port()}, material(bridge_keys[kCarol])}},
        kPackets, kPatience);
  });
  kms::media::run_sender(alice_socket, {"127.0.0.1", bridge_socket.port()},
                         material(conference.keys[kAlice]), 0x1234, kPackets,
                         std::chrono::milliseconds(1), text);
  const auto relay_stats = relay.get();
  const auto bob_stats = bob.get();
  const auto carol_stats = carol.get();
  EXPECT_EQ(relay_stats.authenticated, static_cast<std::uint64_t>(kPackets));
  EXPECT_EQ(relay_stats.rejected, 0u);
  EXPECT_EQ(bob_stats.payload_ok, static_cast<std::uint64_t>(kPackets));
  EXPECT_EQ(carol_stats.payload_ok, static_cast<std::uint64_t>(kPackets));
  EXPECT_EQ(bob_stats.rejected + carol_stats.rejected, 0u);
}

TEST_F(KmsdTest, SrtpMediaCheckFailsWithAnotherPartysKey) {
  // The media check above can fail: a receiver keyed with someone else's key gets nothing.
  Conference conference = admit_conference(*kmsd_);
  Conference other = admit_conference(*kmsd_);
  // The packets are queued in the bound receiver socket before it reads, so its wait for
  // more (which ends it: none is authentic) only starts once it has seen all five.
  kms::media::UdpSocket receiver, sender;
  kms::media::run_sender(sender, {"127.0.0.1", receiver.port()}, material(conference.keys[kBob]), 7,
                         5, std::chrono::milliseconds(1), "x");
  const auto stats = kms::media::run_receiver(receiver, material(other.keys[kBob]), 5, "x",
                                              std::chrono::milliseconds(500));
  EXPECT_EQ(stats.authenticated, 0u);
  EXPECT_EQ(stats.rejected, 5u);
}

TEST_F(KmsdTest, HealthReadinessAndMetrics) {
  (void)admit_conference(*kmsd_);
  auto http = ue_connection(*kmsd_, environment_->pki());
  EXPECT_EQ(http->get("/healthz").status, 200u);
  const auto ready = http->get("/readyz");
  EXPECT_EQ(ready.status, 200u) << ready.body;
  const auto metrics = http->get("/metrics");
  ASSERT_EQ(metrics.status, 200u);
  EXPECT_NE(metrics.content_type.find("text/plain"), std::string::npos);
  for (const char* expected :
       {"kms_http_requests_total{endpoint=\"key_request\",status=\"200\",outcome=\"ok\"}",
        "kms_http_request_duration_seconds_bucket{endpoint=\"key_request\",le=\"+Inf\"}",
        "kms_pkcs11_calls_total{function=\"C_Decrypt\"}",
        "kms_pkcs11_call_duration_seconds_count{function=\"C_DeriveKey\"}",
        "kms_session_pool_open ", "kms_session_pool_in_use ", "kms_audit_records_total ",
        "kms_connections_open "}) {
    EXPECT_NE(metrics.body.find(expected), std::string::npos) << expected;
  }
}

struct RefusalCase {
  std::string name;
  std::optional<CertFiles> cert;
  std::string expected_code;
};

TEST_F(KmsdTest, BridgeRequestsWithoutAValidProvisionedCertificateAreRefusedAndAudited) {
  const Conference conference = admit_conference(*kmsd_);
  const TestPki& pki = environment_->pki();
  const std::vector<RefusalCase> cases = {
      {"no client certificate", std::nullopt, "bridge_not_authorized"},
      {"certificate from another CA", pki.bridge_other_ca, "bridge_not_authorized"},
      {"expired certificate", pki.bridge_expired, "bridge_not_authorized"},
      {"certificate without a SAN URI", pki.bridge_no_san, "bridge_not_authorized"},
      {"valid certificate of an unprovisioned bridge", pki.bridge_unprovisioned,
       "bridge_not_provisioned"},
  };
  const std::string body = kms::wire::bridge_request_to_json(conference.conference_id);
  // Refusals before authentication get one record of their own per source address and code
  // per interval (the rest are summarized, docs/SERVER.md "Audit log"): each case comes from
  // its own loopback address, so each has its record at once.
  int source = 20;
  for (const auto& refusal : cases) {
    SCOPED_TRACE(refusal.name);
    const std::size_t releases = count_events(environment_->audit_path(), "key_release");
    const std::size_t refusals = count_events(environment_->audit_path(), "refusal");
    const RawResponse response =
        https_request(kmsd_->port(), pki.server_ca, "POST", "/v1/bridge/keys", "application/json",
                      body, refusal.cert ? refusal.cert->cert : "",
                      refusal.cert ? refusal.cert->key : "", "127.0.0." + std::to_string(source++));
    EXPECT_EQ(response.status, 403u) << response.body;
    const auto error = kms::wire::error_from_json(response.body);
    ASSERT_TRUE(error.has_value()) << response.body;
    EXPECT_EQ(error->error, refusal.expected_code) << error->detail;
    EXPECT_EQ(response.body.find("wrapped"), std::string::npos);
    EXPECT_EQ(count_events(environment_->audit_path(), "key_release"), releases);
    EXPECT_EQ(count_events(environment_->audit_path(), "refusal"), refusals + 1);
  }
  // The audit records name the reason; the chain still verifies.
  const auto lines = audit_lines(environment_->audit_path());
  bool expired_noted = false;
  std::string conference_hex;
  for (const auto b : conference.conference_id) {
    conference_hex += "0123456789abcdef"[b >> 4];
    conference_hex += "0123456789abcdef"[b & 15];
  }
  for (const auto& line : lines) {
    if (line.find("certificate has expired") != std::string::npos &&
        line.find(conference_hex) != std::string::npos) {
      expired_noted = true;
    }
  }
  EXPECT_TRUE(expired_noted) << "no refusal record naming the expiry and the conference";
  const auto verified = kms::audit::verify_file(environment_->audit_path());
  EXPECT_TRUE(verified.ok) << verified.problem;
  // And the provisioned bridge with its valid certificate still gets the keys.
  EXPECT_EQ(fetch(*kmsd_, conference.conference_id).keys.size(), 2u);
}

TEST_F(KmsdTest, HostileRequestsGetJsonErrorsAndTheServerKeepsServing) {
  const TestPki& pki = environment_->pki();
  const auto post = [&](const std::string& target, const std::string& type,
                        const std::string& body) {
    return https_request(kmsd_->port(), pki.server_ca, "POST", target, type, body);
  };
  const auto expect_error = [](const RawResponse& response, unsigned status, const char* code) {
    EXPECT_EQ(response.status, status) << response.body;
    const auto error = kms::wire::error_from_json(response.body);
    ASSERT_TRUE(error.has_value()) << response.body;
    EXPECT_EQ(error->error, code);
    EXPECT_NE(response.header("Content-Type").find("application/json"), std::string::npos);
  };
  expect_error(post("/v1/key-request", "application/json", std::string(64 * 1024, 'x')), 413,
               "malformed_request");
  expect_error(post("/v1/key-request", "application/json", "{\"chair_id\": "), 400,
               "malformed_request");
  expect_error(post("/v1/key-request", "application/json", "[1,2,3]"), 400, "malformed_request");
  expect_error(post("/v1/key-request", "text/plain", "{}"), 415, "malformed_request");
  expect_error(post("/v1/key-request", "", "{}"), 415, "malformed_request");
  expect_error(post("/v1/key-request", "application/json",
                    R"({"chair_id":"sip:a@x","responder_id":"sip:b@x","chair_envelope":"AA==",)"
                    R"("responder_envelope":"AA"})"),
               400, "malformed_request");
  expect_error(post("/v1/key-request", "application/json",
                    R"({"chair_id":"sip:a@x","responder_id":"sip:b@x","chair_envelope":"AAAA",)"
                    R"("responder_envelope":"AAAA","extra":1})"),
               400, "malformed_request");
  expect_error(post("/v1/key-request", "application/json",
                    R"({"chair_id":"sip:a@x","responder_id":"sip:b@x","chair_envelope":"AQEBAQ",)"
                    R"("responder_envelope":"AQEBAQ"})"),
               400, "malformed_request");  // well-formed JSON, envelope truncated
  expect_error(https_request(kmsd_->port(), pki.server_ca, "GET", "/v1/key-request", "", ""), 405,
               "malformed_request");
  expect_error(post("/nope", "application/json", "{}"), 404, "malformed_request");
  expect_error(post("/v1/bridge/keys", "application/json", "{\"conference_id\":\"!!\"}"), 403,
               "bridge_not_authorized");  // no certificate: refused before the body matters

  // Header over the limit.
  const RawResponse big_header = https_request(kmsd_->port(), pki.server_ca, "GET",
                                               "/healthz?" + std::string(16 * 1024, 'a'), "", "");
  expect_error(big_header, 431, "malformed_request");
  EXPECT_EQ(big_header.header("Connection"), "close");

  // Random bodies never crash it.
  std::mt19937 random(42);
  for (int i = 0; i < 60; ++i) {
    std::string body(random() % 600, '\0');
    for (auto& c : body) c = static_cast<char>(random() % 256);
    const RawResponse response =
        post(i % 2 ? "/v1/key-request" : "/v1/bridge/keys", "application/json", body);
    EXPECT_GE(response.status, 400u);
    EXPECT_LT(response.status, 500u);
  }
  EXPECT_TRUE(kmsd_->running());
  (void)admit_conference(*kmsd_);  // still serving real requests
}

TEST_F(KmsdTest, SlowHeadersAreCutOffWhileOtherClientsAreServed) {
  const TestPki& pki = environment_->pki();
  const auto timeouts = fetch_metric(*kmsd_, pki, "kms_timeouts_total");
  ASSERT_TRUE(timeouts.has_value());
  SlowTlsConnection slow(kmsd_->port(), pki.server_ca);
  ASSERT_TRUE(slow.write("POST /v1/key-request HTTP/1.1\r\nHost: x\r\nX-Slow: a"));
  // Meanwhile another client is served, while the slow one is still connected.
  EXPECT_EQ(ue_connection(*kmsd_, pki)->get("/healthz").status, 200u);
  EXPECT_FALSE(slow.closed_by_server(std::chrono::milliseconds(0)))
      << "the slow client was cut off before another client was served";
  // The header never ends: one more byte every 100 ms, however long the server lets it.
  const bool closed = wait_until(
      [&] { return !slow.write("a") || slow.closed_by_server(std::chrono::milliseconds(100)); });
  EXPECT_TRUE(closed) << "the slow client was never cut off";
  // By the read timeout (not by an error): the server counts it.
  EXPECT_TRUE(wait_until(
      [&] { return fetch_metric(*kmsd_, pki, "kms_timeouts_total").value_or(0) > *timeouts; }));
}

TEST_F(KmsdTest, ConnectionFloodBeyondTheLimitIsBoundedAndOthersAreServed) {
  ConfigOverrides overrides;
  overrides.limits["max_connections"] = "16";
  overrides.limits["handshake_timeout_ms"] = "1000";
  KmsdProcess kmsd(*environment_, environment_->write_config("flood.toml", overrides));
  const TestPki& pki = environment_->pki();
  auto established = ue_connection(kmsd, pki);
  ASSERT_EQ(established->get("/healthz").status, 200u);
  const long rss_before = kmsd.rss_kb();
  ASSERT_GT(rss_before, 0);  // read from /proc: the bound below compares real figures

  std::vector<int> flood;
  for (int i = 0; i < 400; ++i) {
    const int fd = open_silent_tcp(kmsd.port());
    if (fd >= 0) flood.push_back(fd);
  }
  ASSERT_EQ(flood.size(), 400u);
  // The connection opened before the flood is still served. Once the server has taken every
  // flood connection off the backlog (accepted or rejected), it has at most max_connections
  // open: the rest were refused, or closed during their TLS handshake to make room for newer
  // ones (docs/SERVER.md "Connection limits").
  std::string metrics;
  const auto value = [&](const std::string& name) {
    return metric_value(metrics, name).value_or(-1);
  };
  const bool taken = wait_until([&] {
    try {
      const auto response = established->get("/metrics");
      metrics = response.status == 200 ? response.body : "";
    } catch (const kms::tools::TransportError&) {
      metrics.clear();  // the connection idled out and a new one was refused: try again
    }
    return value("kms_connections_accepted_total") + value("kms_connections_rejected_total") >=
           1 + 400;  // the established connection and the flood
  });
  ASSERT_TRUE(taken) << metrics;
  EXPECT_GE(value("kms_connections_open"), 1);  // at least the established one
  EXPECT_LE(value("kms_connections_open"), 16);
  EXPECT_GT(value("kms_connections_rejected_total") + value("kms_handshakes_evicted_total"), 0)
      << metrics;
  // A new client gets in (taking the place of a flood connection still in its handshake).
  const bool served = wait_until([&] {
    try {
      return ue_connection(kmsd, pki)->get("/healthz").status == 200;
    } catch (const std::exception&) {
      return false;
    }
  });
  EXPECT_TRUE(served);
  for (int fd : flood) ::close(fd);
  const long rss_after = kmsd.rss_kb();
  ASSERT_GT(rss_after, 0);
  // Under ASan, freed memory waits in a quarantine (up to 256 MiB) and every block has red
  // zones: RSS is the sanitizer's, not kmsd's. The normal build checks the bound.
  if (!testsupport::kAddressSanitizer) {
    EXPECT_LT(rss_after - rss_before, 32 * 1024)
        << "RSS grew from " << rss_before << " to " << rss_after << " kB";
  }
  EXPECT_EQ(kmsd.terminate(), 0);
}

TEST_F(KmsdTest, UnwritableAuditLogMakesKeyReleaseFail) {
  const Conference conference = admit_conference(*kmsd_);
  ConfigOverrides overrides;
  overrides.audit_path = "/dev/full";  // every write fails with ENOSPC
  KmsdProcess kmsd(*environment_, environment_->write_config("audit-full.toml", overrides));
  std::string error;
  const auto release = fetch(kmsd, conference.conference_id, 503, &error);
  EXPECT_EQ(error, "audit_unavailable");
  EXPECT_TRUE(release.keys.empty());

  const client::Secret r_a = client::UeClient::make_nonce(), r_c = client::UeClient::make_nonce();
  const kms::KeyRequest request = key_request(*environment_, kAlice, r_a, kCarol, r_c);
  auto http = ue_connection(kmsd, environment_->pki());
  const auto result = http->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
  EXPECT_EQ(result.status, 503u);
  const auto body = kms::wire::error_from_json(result.body);
  ASSERT_TRUE(body.has_value());
  EXPECT_EQ(body->error, "audit_unavailable");
  EXPECT_EQ(result.body.find("chair_response"), std::string::npos);
}

TEST_F(KmsdTest, AdmittedConferenceIsServedAfterSigtermAndRestart) {
  const std::string config = environment_->write_config("restart.toml");
  Conference conference;
  {
    KmsdProcess first(*environment_, config);
    conference = admit_conference(first);
    auto idle = ue_connection(first, environment_->pki());  // an idle keep-alive connection
    ASSERT_EQ(idle->get("/healthz").status, 200u);
    EXPECT_EQ(first.terminate(), 0) << first.log();
    // An idle keep-alive connection does not hold the drain: kmsd closed it and drained,
    // rather than waiting for drain_timeout_ms and cutting it.
    EXPECT_NE(first.log().find("msg=drained"), std::string::npos) << first.log();
    EXPECT_EQ(first.log().find("drain timeout"), std::string::npos) << first.log();
  }
  KmsdProcess second(*environment_, config);
  const kms::BridgeRelease release = fetch(second, conference.conference_id);
  ASSERT_EQ(release.keys.size(), 2u);
  const client::BridgeClient bridge(kBridgeId, environment_->root_key(kBridgeId),
                                    profile_of(environment_->profile()));
  for (const auto& item : release.keys) {
    if (item.member_id != kBob) continue;
    const auto key = bridge.open(
        release.conference_id, {item.member_id, item.role, item.key_id, item.suite, item.wrapped});
    EXPECT_TRUE(client::equal_constant_time(key.key, conference.keys[kBob].key));
  }
}

// The ids of the key requests kmsd logged as answered (one log line per request it read).
std::set<std::string> logged_key_request_ids(const std::string& log) {
  std::set<std::string> ids;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find(" msg=request ") == std::string::npos ||
        line.find(" path=/v1/key-request ") == std::string::npos) {
      continue;
    }
    const auto at = line.find(" id=");
    if (at != std::string::npos) ids.insert(line.substr(at + 4, line.find(' ', at + 4) - at - 4));
  }
  return ids;
}

TEST_F(KmsdTest, SigtermUnderLoadAnswersEveryRequestItAcceptedAndExitsCleanly) {
  KmsdProcess kmsd(*environment_, environment_->write_config("drain.toml"));
  using Outcome = RawTlsConnection::Outcome;
  std::mutex mutex;
  std::set<std::string> answered;      // X-Request-Id of every complete 200
  std::map<std::string, int> endings;  // how each client's last exchange ended
  std::vector<std::string> problems;   // wrong answers (status, unopenable response)
  std::atomic<int> ok{0}, answered_in_drain{0};
  // Each client sends key requests on one keep-alive connection (reconnecting after a
  // Connection: close) until an exchange does not complete; that ends it.
  const auto client_loop = [&](const char* invitee) {
    const client::UeClient chair = ue(kAlice);
    const client::UeClient responder = ue(invitee);
    RawTlsConnection connection(kmsd.port(), environment_->pki().server_ca);
    for (;;) {
      const client::Secret r_a = client::UeClient::make_nonce(),
                           r_b = client::UeClient::make_nonce();
      const kms::KeyRequest request{kAlice, invitee, chair.chair_envelope(r_a, invitee, kSuite),
                                    responder.responder_envelope(r_b, kAlice, kSuite)};
      const auto exchange = connection.exchange("POST", "/v1/key-request", "application/json",
                                                kms::wire::key_request_to_json(request));
      std::lock_guard lock(mutex);
      if (exchange.outcome != Outcome::complete) {
        ++endings[std::string(outcome_name(exchange.outcome)) + ": " + exchange.error];
        return;
      }
      const RawResponse& response = exchange.response;
      if (response.status != 200) {
        problems.push_back("status " + std::to_string(response.status) + ": " + response.body);
        continue;
      }
      try {
        const auto body = kms::wire::key_response_from_json(response.body);
        (void)chair.open_chair_response(body.chair_response, r_a, invitee, kSuite);
        (void)responder.open_responder_response(body.responder_response, r_b, kAlice, kSuite,
                                                body.conference_id);
      } catch (const std::exception& error) {
        problems.push_back(std::string("response does not open: ") + error.what());
        continue;
      }
      answered.insert(response.header("X-Request-Id"));
      if (response.header("Connection") == "close") ++answered_in_drain;
      ++ok;
    }
  };
  std::vector<std::thread> clients;
  for (const char* invitee : {kBob, kCarol, kBob, kCarol})
    clients.emplace_back(client_loop, invitee);
  // Under load: SIGTERM once the clients have been served a while.
  EXPECT_TRUE(wait_until([&] { return ok >= 40; })) << kmsd.log();
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
  for (auto& thread : clients) thread.join();
  const std::string log = kmsd.log();

  EXPECT_TRUE(problems.empty()) << problems.front();
  // How a client may end: its connection refused or its handshake cut (nothing sent), or
  // the connection closed before one byte of a response (a keep-alive connection the drain
  // closed before kmsd read a request on it: checked against kmsd's log below). Never a
  // response cut short, never a timeout.
  int ended = 0;
  for (const auto& [how, count] : endings) {
    ended += count;
    EXPECT_TRUE(how.starts_with("not_connected") || how.starts_with("closed_before_response"))
        << count << " x " << how;
  }
  EXPECT_EQ(ended, 4);
  // Every request kmsd read (each gets one log line when it is answered) was answered in
  // full, and nothing it admitted went unanswered: the requests a client lost were never
  // read.
  EXPECT_EQ(logged_key_request_ids(log), answered);
  EXPECT_EQ(count_events(environment_->audit_path("drain.toml"), "admission"),
            static_cast<std::size_t>(ok.load()));
  EXPECT_NE(log.find("msg=drained"), std::string::npos) << log;
  EXPECT_EQ(log.find("drain timeout"), std::string::npos) << log;
  const auto verified = kms::audit::verify_file(environment_->audit_path("drain.toml"));
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_EQ(verified.records, static_cast<std::uint64_t>(ok.load()));
  std::cout << "[ drain    ] " << ok << " answered, " << answered_in_drain
            << " of them during the drain\n";
}

TEST_F(KmsdTest, SeedFlowOnNssSoftokenWithTheSp800108Profile) {
  // The same server on another PKCS#11 implementation, chosen by configuration alone.
  auto nss = KmsdEnvironment::create(testsupport::TokenKind::nss);
  ASSERT_EQ(nss->profile(), "sp800-108-cmac");
  KmsdEnvironment* const softhsm = environment_;
  environment_ = nss.get();
  struct Restore {
    KmsdEnvironment* previous;
    ~Restore() { environment_ = previous; }
  } restore{softhsm};
  KmsdProcess kmsd(*nss, nss->dir() + "/kmsd.toml");
  Conference conference;
  conference.r_a = client::UeClient::make_nonce();
  invite(kmsd, conference, kBob);
  invite(kmsd, conference, kCarol);
  ASSERT_EQ(conference.chair_keys.size(), 2u);
  EXPECT_TRUE(
      client::equal_constant_time(conference.chair_keys[0].key, conference.chair_keys[1].key));
  const kms::BridgeRelease release = fetch(kmsd, conference.conference_id);
  ASSERT_EQ(release.keys.size(), 3u);
  const client::BridgeClient bridge(kBridgeId, nss->root_key(kBridgeId),
                                    client::Profile::sp800_108_cmac);
  for (const auto& item : release.keys) {
    const auto key = bridge.open(
        release.conference_id, {item.member_id, item.role, item.key_id, item.suite, item.wrapped});
    const client::MediaKey& expected =
        item.member_id == kAlice ? conference.chair_keys[0] : conference.keys[item.member_id];
    EXPECT_TRUE(client::equal_constant_time(key.key, expected.key)) << item.member_id;
  }
  EXPECT_EQ(kmsd.terminate(), 0);
}

// The command-line path the demo takes: kms-client (UE and bridge roles) and kms-media
// (SRTP sender, bridge relay, receivers) as separate processes.
TEST_F(KmsdTest, ClientAndMediaToolsRunTheSeedFlow) {
  using testsupport::run_command;
  const std::string d = environment_->dir() + "/cli";
  fs::create_directories(d);
  const std::string profile = environment_->profile();
  const std::vector<std::string> server = {
      "--server", kmsd_->url(), "--ca", environment_->pki().server_ca, "--profile", profile};
  const auto run = [&](std::vector<std::string> argv, bool with_server = false) {
    if (with_server) argv.insert(argv.end(), server.begin(), server.end());
    return run_command(argv);
  };
  const std::string client_bin = KMS_CLIENT_BIN;
  const std::string media_bin = KMS_MEDIA_BIN;
  for (const char* invitee : {kBob, kCarol}) {
    const std::string name = std::string(invitee).substr(4, 3);
    auto r = run({client_bin, "ue", "invite", "--id", kAlice, "--key-file",
                  environment_->key_file(kAlice), "--state", d + "/alice.state", "--invitee",
                  invitee, "--out", d + "/" + name + ".ea", "--profile", profile});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run({client_bin, "ue", "request", "--id", invitee, "--key-file",
             environment_->key_file(invitee), "--chair", kAlice, "--chair-envelope",
             d + "/" + name + ".ea", "--out-relay", d + "/" + name + ".relay", "--out-key",
             d + "/" + name + ".media"},
            true);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run({client_bin, "ue", "open", "--id", kAlice, "--key-file", environment_->key_file(kAlice),
             "--state", d + "/alice.state", "--relay", d + "/" + name + ".relay", "--out-key",
             d + "/alice-via-" + name + ".media", "--profile", profile});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(fs::file_size(d + "/alice-via-bob.media"), fs::file_size(d + "/alice-via-car.media"));
  const auto relay = boost::json::parse(kms::tools::read_text(d + "/bob.relay")).as_object();
  const std::string conference(relay.at("conference_id").as_string());
  auto r = run(
      {client_bin, "bridge", "fetch", "--id", kBridgeId, "--key-file",
       environment_->key_file(kBridgeId), "--conference", conference, "--out", d + "/bridge.keys",
       "--cert", environment_->pki().bridge.cert, "--cert-key", environment_->pki().bridge.key},
      true);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run({client_bin, "check-keys", "--bridge-keys", d + "/bridge.keys",
           d + "/alice-via-bob.media", d + "/alice-via-car.media", d + "/bob.media",
           d + "/car.media"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // A key from another party must not match: check-keys can fail.
  fs::copy_file(d + "/bob.media", d + "/wrong.media");
  std::string wrong = kms::tools::read_text(d + "/wrong.media");
  wrong.replace(wrong.find(kBob), std::string(kBob).size(), kCarol);
  kms::tools::write_text(d + "/wrong.media", wrong, true);
  r = run({client_bin, "check-keys", "--bridge-keys", d + "/bridge.keys", d + "/wrong.media"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  // A bridge without its certificate is refused (exit 1, the server's code printed).
  r = run(
      {client_bin, "bridge", "fetch", "--id", kBridgeId, "--key-file",
       environment_->key_file(kBridgeId), "--conference", conference, "--out", d + "/refused.keys"},
      true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bridge_not_authorized"), std::string::npos) << r.err;

  // SRTP media through separate processes.
  const std::string text = "cli media";
  auto bob = std::async(std::launch::async, [&] {
    return run({media_bin, "receive", "--key-file", d + "/bob.media", "--port-file",
                d + "/bob.port", "--packets", "10", "--expect", text, "--timeout-ms", "30000"});
  });
  auto carol = std::async(std::launch::async, [&] {
    return run({media_bin, "receive", "--key-file", d + "/car.media", "--port-file",
                d + "/car.port", "--packets", "10", "--expect", text, "--timeout-ms", "30000"});
  });
  const auto wait_port = [](const std::string& file) {
    std::string text;
    wait_until([&] {
      text = fs::exists(file) ? kms::tools::read_text(file) : "";
      return !text.empty();
    });
    return text.empty() ? 0 : std::stoi(text);
  };
  const int bob_port = wait_port(d + "/bob.port");
  const int carol_port = wait_port(d + "/car.port");
  ASSERT_GT(bob_port, 0);
  ASSERT_GT(carol_port, 0);
  auto bridge = std::async(std::launch::async, [&] {
    return run({media_bin, "relay", "--bridge-keys", d + "/bridge.keys", "--from", kAlice, "--to",
                std::string(kBob) + "=127.0.0.1:" + std::to_string(bob_port), "--to",
                std::string(kCarol) + "=127.0.0.1:" + std::to_string(carol_port), "--port-file",
                d + "/bridge.port", "--packets", "10", "--timeout-ms", "30000"});
  });
  const int bridge_port = wait_port(d + "/bridge.port");
  ASSERT_GT(bridge_port, 0);
  r = run({media_bin, "send", "--key-file", d + "/alice-via-bob.media", "--to",
           "127.0.0.1:" + std::to_string(bridge_port), "--packets", "10", "--text", text});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto bridge_result = bridge.get();
  EXPECT_EQ(bridge_result.exit_code, 0) << bridge_result.out << bridge_result.err;
  const auto bob_result = bob.get();
  const auto carol_result = carol.get();
  EXPECT_EQ(bob_result.exit_code, 0) << bob_result.out << bob_result.err;
  EXPECT_EQ(carol_result.exit_code, 0) << carol_result.out << carol_result.err;
  EXPECT_NE(bob_result.out.find("10/10 authentic"), std::string::npos) << bob_result.out;
}

TEST_F(KmsdTest, SighupReloadsTheServerCertificate) {
  const std::string dir = environment_->dir() + "/reload";
  fs::create_directories(dir);
  CertFiles server{dir + "/server.crt", dir + "/server.key"};
  fs::copy_file(environment_->pki().server.cert, server.cert);
  fs::copy_file(environment_->pki().server.key, server.key);
  ConfigOverrides overrides;
  overrides.tls_cert = server.cert;
  overrides.tls_key = server.key;
  KmsdProcess kmsd(*environment_, environment_->write_config("reload.toml", overrides));
  EXPECT_EQ(
      https_request(kmsd.port(), environment_->pki().server_ca, "GET", "/healthz", "", "").status,
      200u);
  const std::string new_ca = TestPki::reissue_server(dir, server);
  kmsd.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] {
    return kmsd.log().find("msg=\"certificates reloaded\"") != std::string::npos;
  })) << kmsd.log();
  EXPECT_EQ(https_request(kmsd.port(), new_ca, "GET", "/healthz", "", "").status, 200u);
  EXPECT_THROW(https_request(kmsd.port(), environment_->pki().server_ca, "GET", "/healthz", "", ""),
               std::exception);
  EXPECT_NE(kmsd.log().find("certificates reloaded"), std::string::npos);
}

}  // namespace
