// kmsd's documented surface (docs/SERVER.md), each against a real kmsd process: the
// X-Request-Id, Cache-Control and Allow headers; TLS 1.3 only by default and the TLS 1.2
// cipher restriction; SIGHUP with unusable certificate files; exit codes 1 and 2; log lines
// that a client cannot break or forge (kv and JSON); and no secret in the log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "client_tls.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/audit_verify.h"
#include "kms/client/base64url.h"
#include "kms/client/bridge_client.h"
#include "kms/client/ue_client.h"
#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "tls_test_client.h"

namespace kmstest {
namespace {

namespace client = kms::client;
namespace fs = std::filesystem;
using Outcome = RawTlsConnection::Outcome;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A complete response to one exchange on `connection` (fails the test otherwise).
RawResponse exchange(RawTlsConnection& connection, const std::string& method,
                     const std::string& target, const std::string& content_type = {},
                     const std::string& body = {}, const RawTlsConnection::Headers& headers = {}) {
  auto result = connection.exchange(method, target, content_type, body, headers);
  EXPECT_EQ(result.outcome, Outcome::complete)
      << method << " " << target << ": " << outcome_name(result.outcome) << " " << result.error;
  return result.response;
}

std::string error_code_of(const RawResponse& response) {
  const auto error = kms::wire::error_from_json(response.body);
  return error ? error->error : "(not an error body: " + response.body + ")";
}

// The UE and bridge side of one conference (A invites B and C, the bridge fetches K1..K3),
// with every response as received.
struct SeedFlow {
  client::Secret r_a;
  std::map<std::string, client::Secret> r_invitee;
  kms::Bytes conference_id;
  std::vector<RawResponse> key_responses;  // one per invitee, 200
  std::vector<kms::KeyResponse> key_bodies;
  std::vector<client::MediaKey> ue_keys;  // K1 (once per invitee), K2, K3
  RawResponse release;                    // 200
  std::vector<kms::ReleasedKey> released;
  std::vector<client::MediaKey> bridge_keys;  // the wrapped keys, opened
};

SeedFlow run_seed_flow(const KmsdProcess& kmsd, const KmsdEnvironment& environment) {
  SeedFlow flow;
  flow.r_a = client::UeClient::make_nonce();
  const client::UeClient chair = ue_client(environment, kAlice);
  RawTlsConnection ue(kmsd.port(), environment.pki().server_ca);
  for (const char* invitee : {kBob, kCarol}) {
    const client::Secret r_b = client::UeClient::make_nonce();
    flow.r_invitee[invitee] = r_b;
    const kms::KeyRequest request = key_request(environment, kAlice, flow.r_a, invitee, r_b);
    const RawResponse response = exchange(ue, "POST", "/v1/key-request", "application/json",
                                          kms::wire::key_request_to_json(request));
    EXPECT_EQ(response.status, 200u) << response.body;
    if (response.status != 200) return flow;
    const kms::KeyResponse body = kms::wire::key_response_from_json(response.body);
    flow.key_responses.push_back(response);
    flow.key_bodies.push_back(body);
    flow.conference_id = body.conference_id;
    flow.ue_keys.push_back(
        chair.open_chair_response(body.chair_response, flow.r_a, invitee, kSuite));
    flow.ue_keys.push_back(ue_client(environment, invitee)
                               .open_responder_response(body.responder_response, r_b, kAlice,
                                                        kSuite, body.conference_id));
  }
  const TestPki& pki = environment.pki();
  RawTlsConnection bridge(kmsd.port(), pki.server_ca, pki.bridge.cert, pki.bridge.key);
  flow.release = exchange(bridge, "POST", "/v1/bridge/keys", "application/json",
                          kms::wire::bridge_request_to_json(flow.conference_id));
  EXPECT_EQ(flow.release.status, 200u) << flow.release.body;
  if (flow.release.status != 200) return flow;
  const kms::BridgeRelease release = kms::wire::bridge_release_from_json(flow.release.body);
  flow.released = release.keys;
  const client::BridgeClient opener(kBridgeId, environment.root_key(kBridgeId),
                                    profile_of(environment.profile()));
  for (const auto& item : release.keys) {
    flow.bridge_keys.push_back(opener.open(
        release.conference_id, {item.member_id, item.role, item.key_id, item.suite, item.wrapped}));
  }
  EXPECT_EQ(flow.bridge_keys.size(), 3u);
  return flow;
}

class KmsdSurfaceTest : public SharedKmsdTest<KmsdSurfaceTest> {
 protected:
  static const TestPki& pki() { return environment_->pki(); }
};

// ---------------------------------------------------------------------------------------
// Response headers

// The kmsd log line (kv format) of the request with this id; empty if none or several.
std::string request_line(const std::string& log, const std::string& id) {
  std::string found;
  int count = 0;
  for (const auto& line : lines_of(log)) {
    if (line.find(" msg=request ") != std::string::npos &&
        line.find(" id=" + id + " ") != std::string::npos) {
      found = line;
      ++count;
    }
  }
  return count == 1 ? found : std::string();
}

TEST_F(KmsdSurfaceTest, EveryResponseCarriesItsOwnRequestIdAndNoStore) {
  const SeedFlow flow = run_seed_flow(*kmsd_, *environment_);
  ASSERT_EQ(flow.key_responses.size(), 2u);
  struct Seen {
    std::string what;
    RawResponse response;
    std::string path;  // as logged
  };
  std::vector<Seen> seen;
  for (const auto& response : flow.key_responses) {
    seen.push_back({"key request 200", response, "/v1/key-request"});
  }
  seen.push_back({"bridge release 200", flow.release, "/v1/bridge/keys"});
  RawTlsConnection ue(kmsd_->port(), pki().server_ca);
  // A client's own X-Request-Id is not taken over: kmsd names every request itself.
  seen.push_back({"health, client sent an X-Request-Id",
                  exchange(ue, "GET", "/healthz", {}, {}, {{"X-Request-Id", "client-chosen"}}),
                  "/healthz"});
  seen.push_back({"readiness", exchange(ue, "GET", "/readyz"), "/readyz"});
  seen.push_back({"metrics", exchange(ue, "GET", "/metrics"), "/metrics"});
  seen.push_back({"404", exchange(ue, "GET", "/nope"), "/nope"});
  seen.push_back({"405", exchange(ue, "GET", "/v1/key-request"), "/v1/key-request"});
  seen.push_back(
      {"415", exchange(ue, "POST", "/v1/key-request", "text/plain", "{}"), "/v1/key-request"});
  seen.push_back(
      {"400", exchange(ue, "POST", "/v1/key-request", "application/json", "{"), "/v1/key-request"});
  seen.push_back({"403 without certificate",
                  exchange(ue, "POST", "/v1/bridge/keys", "application/json",
                           kms::wire::bridge_request_to_json(flow.conference_id)),
                  "/v1/bridge/keys"});
  seen.push_back({"413",
                  https_request(kmsd_->port(), pki().server_ca, "POST", "/v1/key-request",
                                "application/json", std::string(64 * 1024, 'x')),
                  ""});  // refused while reading: logged without the path
  seen.push_back({"431",
                  https_request(kmsd_->port(), pki().server_ca, "GET",
                                "/healthz?" + std::string(16 * 1024, 'a'), "", ""),
                  ""});

  const std::regex id_form("[0-9a-f]{8}-[0-9]+");
  std::set<std::string> ids;
  const std::string log = kmsd_->log();
  for (const auto& [what, response, path] : seen) {
    SCOPED_TRACE(what);
    EXPECT_NE(response.status, 0u);
    const std::string id = response.header("X-Request-Id");
    EXPECT_TRUE(std::regex_match(id, id_form)) << "X-Request-Id: " << id;
    EXPECT_TRUE(ids.insert(id).second) << "X-Request-Id " << id << " seen twice";
    EXPECT_EQ(response.header("Cache-Control"), "no-store");
    // The same id names the request in the log.
    const std::string line = request_line(log, id);
    ASSERT_FALSE(line.empty()) << "no single log line with id=" << id;
    EXPECT_NE(line.find(" status=" + std::to_string(response.status) + " "), std::string::npos)
        << line;
    if (!path.empty()) {
      EXPECT_NE(line.find(" path=" + path + " "), std::string::npos) << line;
    }
  }
  // ... and the audit records of the admissions and the release.
  const std::string audit = read_text(environment_->audit_path());
  for (const auto* response : {&flow.key_responses[0], &flow.key_responses[1], &flow.release}) {
    const std::string id = response->header("X-Request-Id");
    const std::string event = response == &flow.release ? "key_release" : "admission";
    bool audited = false;
    for (const auto& record : lines_of(audit)) {
      if (record.find("\"request_id\":\"" + id + "\"") != std::string::npos &&
          record.find("\"event\":\"" + event + "\"") != std::string::npos) {
        audited = true;
      }
    }
    EXPECT_TRUE(audited) << "no " << event << " audit record with request_id " << id;
  }
}

TEST_F(KmsdSurfaceTest, WrongMethodIs405WithAllowNamingTheRightOne) {
  struct Case {
    const char* method;
    const char* path;
    const char* allowed;
  };
  const std::vector<Case> cases = {{"POST", "/healthz", "GET"},
                                   {"POST", "/readyz", "GET"},
                                   {"DELETE", "/metrics", "GET"},
                                   {"GET", "/v1/key-request", "POST"},
                                   {"PUT", "/v1/bridge/keys", "POST"}};
  RawTlsConnection connection(kmsd_->port(), pki().server_ca);
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.method) + " " + c.path);
    const RawResponse refused = exchange(connection, c.method, c.path, "application/json", "{}");
    EXPECT_EQ(refused.status, 405u);
    EXPECT_EQ(refused.header("Allow"), c.allowed);
    EXPECT_EQ(error_code_of(refused), "malformed_request");
    // The next response on the same connection carries no stale Allow.
    const RawResponse next = exchange(connection, "GET", "/healthz");
    EXPECT_EQ(next.status, 200u);
    EXPECT_EQ(next.header("Allow"), "");
  }
  EXPECT_EQ(exchange(connection, "GET", "/nope").header("Allow"), "");  // 404: no Allow
}

// ---------------------------------------------------------------------------------------
// TLS versions and cipher suites

struct TlsProbe {
  bool handshake = false;
  int version = 0;
  std::string cipher;
  std::string error;    // OpenSSL's reasons when the handshake failed
  unsigned health = 0;  // status of GET /healthz over the connection
};

// An OpenSSL client of our own: TLS 1.2 .. max_version, and when set, only these TLS 1.2
// cipher suites. Verifies kmsd's certificate; then GET /healthz.
TlsProbe probe_tls(std::uint16_t port, const std::string& ca_file, int max_version,
                   const std::string& tls12_ciphers = {}) {
  TlsProbe probe;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> context(SSL_CTX_new(TLS_client_method()),
                                                            SSL_CTX_free);
  SSL_CTX* ctx = context.get();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, max_version);
  if (!tls12_ciphers.empty() && SSL_CTX_set_cipher_list(ctx, tls12_ciphers.c_str()) != 1) {
    ADD_FAILURE() << "this OpenSSL has no cipher " << tls12_ciphers;
    return probe;
  }
  EXPECT_EQ(SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);

  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    probe.error = "connect failed";
    return probe;
  }
  kms::tools::set_socket_timeouts(fd, std::chrono::milliseconds(10000));
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx), SSL_free);
  SSL_set_fd(ssl.get(), fd);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), "127.0.0.1");
  ERR_clear_error();
  if (SSL_connect(ssl.get()) != 1) {
    probe.error = kms::tools::ssl_errors();
    ::close(fd);
    return probe;
  }
  probe.handshake = true;
  probe.version = SSL_version(ssl.get());
  probe.cipher = SSL_get_cipher_name(ssl.get());
  const std::string request =
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
  std::string response;
  char buffer[4096];
  for (int n; (n = SSL_read(ssl.get(), buffer, sizeof buffer)) > 0;) response.append(buffer, n);
  if (response.rfind("HTTP/1.1 ", 0) == 0) probe.health = std::stoul(response.substr(9, 3));
  ::close(fd);
  return probe;
}

TEST_F(KmsdSurfaceTest, DefaultIsTls13OnlyATls12ClientIsRefused) {
  const auto failures = fetch_metric(*kmsd_, pki(), "kms_tls_handshake_failures_total");
  ASSERT_TRUE(failures.has_value());
  const TlsProbe tls12 = probe_tls(kmsd_->port(), pki().server_ca, TLS1_2_VERSION);
  EXPECT_FALSE(tls12.handshake) << "negotiated " << tls12.cipher;
  EXPECT_NE(tls12.error.find("protocol version"), std::string::npos) << tls12.error;
  EXPECT_TRUE(wait_until([&] {
    return fetch_metric(*kmsd_, pki(), "kms_tls_handshake_failures_total") == *failures + 1;
  }));
  // The same client allowed TLS 1.3 gets in: the refusal was about the version.
  const TlsProbe tls13 = probe_tls(kmsd_->port(), pki().server_ca, TLS1_3_VERSION);
  ASSERT_TRUE(tls13.handshake) << tls13.error;
  EXPECT_EQ(tls13.version, TLS1_3_VERSION);
  EXPECT_EQ(tls13.health, 200u);
}

TEST_F(KmsdSurfaceTest, Tls12WhenEnabledOffersOnlyEcdheAeadSuites) {
  ConfigOverrides overrides;
  overrides.server["tls_min_version"] = "\"1.2\"";
  KmsdProcess kmsd(*environment_, environment_->write_config("tls12.toml", overrides));
  // The server key is P-256: the ECDSA suites are the ones it could negotiate at all.
  for (const char* allowed : {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                              "ECDHE-ECDSA-CHACHA20-POLY1305"}) {
    SCOPED_TRACE(allowed);
    const TlsProbe probe = probe_tls(kmsd.port(), pki().server_ca, TLS1_2_VERSION, allowed);
    ASSERT_TRUE(probe.handshake) << probe.error;
    EXPECT_EQ(probe.version, TLS1_2_VERSION);
    EXPECT_EQ(probe.cipher, allowed);
    EXPECT_EQ(probe.health, 200u);
  }
  // CBC suites (with ECDHE and the same key) that OpenSSL's defaults would accept.
  for (const char* refused : {"ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
                              "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"}) {
    SCOPED_TRACE(refused);
    const TlsProbe probe = probe_tls(kmsd.port(), pki().server_ca, TLS1_2_VERSION, refused);
    EXPECT_FALSE(probe.handshake) << "negotiated " << probe.cipher;
    EXPECT_NE(probe.error.find("handshake failure"), std::string::npos) << probe.error;
  }
  const TlsProbe tls13 = probe_tls(kmsd.port(), pki().server_ca, TLS1_3_VERSION);
  ASSERT_TRUE(tls13.handshake) << tls13.error;
  EXPECT_EQ(tls13.version, TLS1_3_VERSION);
}

// ---------------------------------------------------------------------------------------
// SIGHUP with unusable certificate files

TEST_F(KmsdSurfaceTest, SighupWithUnusableCertificateFilesKeepsServingWithTheOldOnes) {
  const std::string dir = environment_->dir() + "/reload-unusable";
  fs::create_directories(dir);
  const CertFiles served{dir + "/server.crt", dir + "/server.key"};
  fs::copy_file(pki().server.cert, served.cert);
  fs::copy_file(pki().server.key, served.key);
  ConfigOverrides overrides;
  overrides.tls_cert = served.cert;
  overrides.tls_key = served.key;
  KmsdProcess kmsd(*environment_, environment_->write_config("reload-unusable.toml", overrides));
  const auto reloads = [&](const char* sample) {
    return fetch_metric(kmsd, pki(), sample).value_or(-1);
  };
  const auto health_with = [&](const std::string& ca) {
    try {
      return https_request(kmsd.port(), ca, "GET", "/healthz", "", "").status;
    } catch (const std::exception&) {
      return 0u;  // the certificate did not verify against `ca`
    }
  };
  ASSERT_EQ(health_with(pki().server_ca), 200u);

  // A certificate and key from a new CA, kept aside; the served files are broken in turn.
  const std::string next_dir = dir + "/next";
  fs::create_directories(next_dir);
  const CertFiles next{next_dir + "/server.crt", next_dir + "/server.key"};
  fs::copy_file(pki().server.cert, next.cert);
  fs::copy_file(pki().server.key, next.key);
  const std::string next_ca = TestPki::reissue_server(next_dir, next);

  struct Breakage {
    std::string what;
    std::function<void()> apply;
    std::string logged;  // part of the reason kmsd logs
  };
  const std::vector<Breakage> breakages = {
      {"certificate file missing", [&] { fs::remove(served.cert); }, "server.tls_cert"},
      {"certificate file not PEM",
       [&] {
         std::ofstream(served.cert, std::ios::trunc)
             << "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END "
                "CERTIFICATE-----\n";
       },
       "server.tls_cert"},
      {"key file not PEM",
       [&] {
         fs::copy_file(next.cert, served.cert, fs::copy_options::overwrite_existing);
         std::ofstream(served.key, std::ios::trunc) << "garbage\n";
       },
       "server.tls_key"},
      {"key of another certificate",
       [&] {
         fs::copy_file(next.cert, served.cert, fs::copy_options::overwrite_existing);
         fs::copy_file(pki().server.key, served.key, fs::copy_options::overwrite_existing);
       },
       "key values mismatch"},
  };
  double failures = 0;
  for (const auto& breakage : breakages) {
    SCOPED_TRACE(breakage.what);
    breakage.apply();
    kmsd.signal(SIGHUP);
    ++failures;
    ASSERT_TRUE(wait_until([&] {
      return reloads("kms_certificate_reload_failures_total") == failures;
    })) << kmsd.log();
    EXPECT_EQ(reloads("kms_certificate_reloads_total"), 0);
    // Still serving, with the old certificate: only the old CA verifies it.
    EXPECT_EQ(health_with(pki().server_ca), 200u);
    EXPECT_EQ(health_with(next_ca), 0u);
    EXPECT_TRUE(kmsd.running());
  }
  // Each failure is logged with its reason.
  std::vector<std::string> logged;
  for (const auto& line : lines_of(kmsd.log())) {
    if (line.find("certificate reload failed") != std::string::npos) logged.push_back(line);
  }
  ASSERT_EQ(logged.size(), breakages.size()) << kmsd.log();
  for (std::size_t i = 0; i < breakages.size(); ++i) {
    EXPECT_NE(logged[i].find("level=error"), std::string::npos) << logged[i];
    EXPECT_NE(logged[i].find(breakages[i].logged), std::string::npos) << logged[i];
  }
  // Usable files again: the next SIGHUP takes them (so the checks above could tell).
  fs::copy_file(next.key, served.key, fs::copy_options::overwrite_existing);
  kmsd.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] {
    return kmsd.log().find("msg=\"certificates reloaded\"") != std::string::npos;
  })) << kmsd.log();
  EXPECT_EQ(health_with(next_ca), 200u);
  EXPECT_EQ(health_with(pki().server_ca), 0u);
}

// ---------------------------------------------------------------------------------------
// Exit codes: 1 invalid configuration, 2 could not start

TEST_F(KmsdSurfaceTest, ExitCodeIsOneForABadConfigurationAndTwoWhenItCannotStart) {
  const auto token_environment = environment_->token().environment();
  // Every case fails at once; `timeout` only stops a kmsd that wrongly started.
  const auto run_kmsd = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"timeout", "60", KMSD_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::run_command(argv, token_environment);
  };
  const std::string dir = environment_->dir() + "/exit-codes";
  fs::create_directories(dir);
  const std::string good = environment_->write_config("exit-good.toml");
  const auto with = [&](const std::string& name, const std::string& from, const std::string& to) {
    std::string text = read_text(good);
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    const std::string path = dir + "/" + name;
    std::ofstream(path) << text;
    return path;
  };
  struct Case {
    std::string what;
    std::vector<std::string> args;
    int exit_code;
    std::string says;  // on stderr
  };
  // Port in use: a listening socket of our own.
  const int busy = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(busy, 1), 0);
  socklen_t length = sizeof address;
  ::getsockname(busy, reinterpret_cast<sockaddr*>(&address), &length);
  const std::string busy_port = std::to_string(ntohs(address.sin_port));
  // A wrong PIN.
  const std::string wrong_pin = dir + "/wrong.pin";
  testsupport::write_private_file(wrong_pin, "not-the-pin\n");
  // The right PIN in a file others may read.
  const std::string shared_pin = dir + "/shared.pin";
  testsupport::write_private_file(shared_pin, environment_->token().user_pin().value() + "\n",
                                  0644);
  // An audit log whose last complete record was altered (fail closed at start).
  const std::string damaged_audit = dir + "/damaged-audit.log";
  {
    kms::audit::AuditLog log(damaged_audit);
    for (int i = 0; i < 2; ++i) log.record({"admission", "ok", {{"n", std::to_string(i)}}});
  }
  {
    std::string text = read_text(damaged_audit);
    const auto last = text.rfind("\"outcome\":\"");
    ASSERT_NE(last, std::string::npos);
    text[last + 11] ^= 0x01;  // one byte of the last record's outcome
    std::ofstream(damaged_audit, std::ios::trunc | std::ios::binary) << text;
  }
  const std::string pin_line = "pin_file = \"" + environment_->token().pin_file() + "\"";
  const std::vector<Case> cases = {
      {"no --config", {}, 1, "--config"},
      {"unknown table",
       {"--config", with("unknown.toml", "[limits]", "[nonsense]\nx = 1\n[limits]")},
       1,
       "nonsense"},
      {"value out of range",
       {"--config", with("range.toml", "[limits]", "[limits]\nmax_body_bytes = 10")},
       1,
       "limits.max_body_bytes"},
      {"bad --log-level", {"--config", good, "--log-level", "loud"}, 1, "--log-level"},
      {"bad --listen", {"--config", good, "--listen", "nowhere"}, 1, "--listen"},
      {"--check-config of a bad file",
       {"--check-config", with("check.toml", "[limits]", "[limits]\nmax_body_bytes = 10")},
       1,
       "limits.max_body_bytes"},
      {"port in use", {"--config", good, "--listen", "127.0.0.1:" + busy_port}, 2, "cannot start"},
      {"wrong PIN",
       {"--config", with("pin.toml", pin_line, "pin_file = \"" + wrong_pin + "\"")},
       2,
       "CKR_PIN_INCORRECT"},
      {"PIN file readable by others",
       {"--config", with("shared-pin.toml", pin_line, "pin_file = \"" + shared_pin + "\"")},
       2,
       "PIN file " + shared_pin + " has mode 0644"},
      {"PIN file missing",
       {"--config", with("no-pin.toml", pin_line, "pin_file = \"" + dir + "/missing.pin\"")},
       2,
       "cannot start"},
      {"audit log is a folder", {"--config", good, "--audit-log", dir}, 2, "cannot start"},
      {"audit log damaged", {"--config", good, "--audit-log", damaged_audit}, 2, "cannot start"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto result = run_kmsd(c.args);
    EXPECT_EQ(result.exit_code, c.exit_code) << result.err;
    EXPECT_NE(result.err.find(c.says), std::string::npos) << result.err;
  }
  ::close(busy);
  // And the same binary and configuration start (and stop with 0) when nothing is wrong.
  EXPECT_EQ(run_kmsd({"--check-config", good}).exit_code, 0);
  KmsdProcess kmsd(*environment_, good);
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
}

// kmsd's files (docs/OPERATIONS.md "Files and permissions"): a PIN file group or others may
// read stops it at start, with one log line naming the file and its mode and never the PIN;
// the database and audit log it creates are 0600 whatever the umask; an existing database
// others may read is reported at error level (kmsd still serves).
TEST_F(KmsdSurfaceTest, RefusesAPinFileOthersMayReadAndKeepsItsFilesPrivate) {
  const std::string dir = environment_->dir() + "/file-modes";
  fs::create_directories(dir);
  const std::string pin = dir + "/user.pin";
  const std::string pin_value = environment_->token().user_pin().value();
  testsupport::write_private_file(pin, pin_value + "\n", 0644);
  const std::string database = dir + "/kms.db";
  const std::string audit = dir + "/audit.log";
  ConfigOverrides overrides;
  overrides.audit_path = audit;
  std::string text = read_text(environment_->write_config("file-modes.toml", overrides));
  const auto replace = [&](const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  };
  replace("pin_file = \"" + environment_->token().pin_file() + "\"", "pin_file = \"" + pin + "\"");
  replace("path = \"" + environment_->dir() + "/kms.db\"", "path = \"" + database + "\"");
  const std::string config = dir + "/kmsd.toml";
  std::ofstream(config) << text;

  std::vector<std::string> argv = {"timeout", "60", KMSD_BIN, "--config", config};
  const auto refused = testsupport::run_command(argv, environment_->token().environment());
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  std::vector<std::string> about_pin;
  for (const auto& line : lines_of(refused.err)) {
    if (line.find(pin) != std::string::npos) about_pin.push_back(line);
  }
  ASSERT_EQ(about_pin.size(), 1u) << refused.err;
  EXPECT_NE(about_pin[0].find("has mode 0644"), std::string::npos) << about_pin[0];
  EXPECT_NE(about_pin[0].find("level=error"), std::string::npos) << about_pin[0];
  EXPECT_NE(about_pin[0].find("kind=\"PIN unavailable\""), std::string::npos) << about_pin[0];
  EXPECT_EQ(about_pin[0].find("CKR_OK"), std::string::npos) << "an invented CK_RV";
  EXPECT_EQ(refused.err.find(pin_value), std::string::npos) << "the PIN is in the log";
  EXPECT_FALSE(fs::exists(database));  // refused before anything was created

  ASSERT_EQ(::chmod(pin.c_str(), 0600), 0);
  const mode_t previous = ::umask(0);
  {
    KmsdProcess kmsd(*environment_, config);
    ::umask(previous);
    for (const std::string& file : {database, database + "-wal", database + "-shm", audit}) {
      if (file == database + "-shm" && !fs::exists(file)) continue;  // WAL index: on first use
      EXPECT_EQ(testsupport::file_mode(file), 0600) << file;
    }
    EXPECT_EQ(kmsd.log().find("database readable"), std::string::npos) << kmsd.log();
    EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
  }
  ::umask(previous);

  ASSERT_EQ(::chmod(database.c_str(), 0644), 0);
  KmsdProcess kmsd(*environment_, config);
  std::vector<std::string> reported;
  for (const auto& line : lines_of(kmsd.log())) {
    if (line.find("database readable beyond the KMS user") != std::string::npos) {
      reported.push_back(line);
    }
  }
  ASSERT_EQ(reported.size(), 1u) << kmsd.log();
  EXPECT_NE(reported[0].find("level=error"), std::string::npos) << reported[0];
  EXPECT_NE(reported[0].find(database + " has mode 0644"), std::string::npos) << reported[0];
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
}

// ---------------------------------------------------------------------------------------
// Logs: a client cannot break or forge a line

// What a hostile client made kmsd log, by request id: the field and the bytes it chose.
struct Hostile {
  std::string id;
  std::string field;  // "path" or "bridge"
  std::string value;  // as the client sent it (the path as logged: its first 128 bytes)
};

const std::string kForged = "forged";

std::vector<Hostile> send_hostile_requests(const KmsdProcess& kmsd,
                                           const KmsdEnvironment& environment,
                                           const std::string& tag) {
  std::vector<Hostile> sent;
  const TestPki& pki = environment.pki();
  RawTlsConnection ue(kmsd.port(), pki.server_ca);
  const std::string e_acute = "\xc3\xa9";
  std::string long_path = "/";
  for (int i = 0; i < 70; ++i) long_path += e_acute;  // cut at 128 bytes inside a character
  for (const std::string& path :
       {std::string(R"(/healthz?a="b"=c\"\\d{"msg":"forged","level":"error"}=)"),
        std::string("/bad\xff"
                    "byte\xc3\x28"),
        std::string("/c1\xc2\x85"
                    "nel"),
        long_path}) {
    const RawResponse response = exchange(ue, "GET", path);
    EXPECT_NE(response.status, 0u);
    sent.push_back({response.header("X-Request-Id"), "path", path.substr(0, 128)});
  }
  // A bridge certificate from the bridge CA whose identity is built to break lines: kmsd
  // logs the identity of an authenticated bridge (this one is not provisioned: 403).
  const std::string identity =
      "sip:evil\"\n{\"time\":\"x\",\"level\":\"error\",\"msg\":\"forged\"}\r\n"
      "time=x level=error msg=forged\x1b[2J\t\\\x7f\x01\xff@ims.example.net";
  const CertFiles cert = pki.issue_bridge(environment.dir(), "hostile-" + tag, identity);
  RawTlsConnection bridge(kmsd.port(), pki.server_ca, cert.cert, cert.key);
  const RawResponse refused = exchange(bridge, "POST", "/v1/bridge/keys", "application/json",
                                       kms::wire::bridge_request_to_json(kms::Bytes(16, 7)));
  EXPECT_EQ(refused.status, 403u) << refused.body;
  sent.push_back({refused.header("X-Request-Id"), "bridge", identity});
  return sent;
}

// Nothing in the file but printable text and line ends: no raw control character (a
// carriage return, an escape sequence) survives to a terminal or a log shipper.
void expect_no_raw_control_characters(const std::string& text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n') || c == 0x7f) {
      ADD_FAILURE() << "raw control character 0x" << std::hex << int(c) << " at byte " << std::dec
                    << i << ": " << text.substr(i > 60 ? i - 60 : 0, 120);
      return;
    }
  }
}

// A strict logfmt reader for kmsd's kv lines: key=value separated by one space; a value is
// plain (printable ASCII but '"', '=', '\') or quoted with \" \\ and \xNN escapes. nullopt
// if the line is not exactly that.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_logfmt(
    const std::string& line) {
  std::vector<std::pair<std::string, std::string>> fields;
  std::size_t i = 0;
  while (i < line.size()) {
    const std::size_t equals = line.find('=', i);
    if (equals == std::string::npos || equals == i) return std::nullopt;
    const std::string key = line.substr(i, equals - i);
    for (char c : key) {
      if (!std::islower(static_cast<unsigned char>(c)) && c != '_') return std::nullopt;
    }
    i = equals + 1;
    std::string value;
    if (i < line.size() && line[i] == '"') {
      for (++i;; ++i) {
        if (i >= line.size()) return std::nullopt;
        const auto c = static_cast<unsigned char>(line[i]);
        if (c == '"') break;
        if (c < 0x20 || c == 0x7f) return std::nullopt;  // must have been escaped
        if (c != '\\') {
          value += static_cast<char>(c);
          continue;
        }
        if (++i >= line.size()) return std::nullopt;
        if (line[i] == '"' || line[i] == '\\') {
          value += line[i];
        } else if (line[i] == 'x' && i + 2 < line.size() &&
                   std::isxdigit(static_cast<unsigned char>(line[i + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(line[i + 2]))) {
          value += static_cast<char>(std::stoi(line.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          return std::nullopt;
        }
      }
      ++i;  // the closing quote
    } else {
      while (i < line.size() && line[i] != ' ') {
        const auto c = static_cast<unsigned char>(line[i]);
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\') return std::nullopt;
        value += line[i++];
      }
      if (value.empty()) return std::nullopt;
    }
    fields.emplace_back(key, value);
    if (i == line.size()) break;
    if (line[i] != ' ' || i + 1 == line.size()) return std::nullopt;
    ++i;
  }
  return fields;
}

TEST_F(KmsdSurfaceTest, TextLogEscapesWhatAClientSendsSoNoLineCanBeForged) {
  const std::vector<Hostile> sent = send_hostile_requests(*kmsd_, *environment_, "kv");
  const std::string log = kmsd_->log();
  expect_no_raw_control_characters(log);
  std::map<std::string, std::map<std::string, std::string>> by_id;
  for (const auto& line : lines_of(log)) {
    const auto fields = parse_logfmt(line);
    ASSERT_TRUE(fields.has_value()) << "not one logfmt line: " << line;
    ASSERT_GE(fields->size(), 3u) << line;
    EXPECT_EQ((*fields)[0].first, "time") << line;
    EXPECT_EQ((*fields)[1].first, "level") << line;
    EXPECT_EQ((*fields)[2].first, "msg") << line;
    EXPECT_NE((*fields)[2].second, kForged) << line;
    std::map<std::string, std::string> named(fields->begin(), fields->end());
    if (named["msg"] == "request") by_id[named["id"]] = named;
  }
  // Each hostile request is one line, and its value reads back byte for byte.
  for (const auto& hostile : sent) {
    SCOPED_TRACE(hostile.field + " of request " + hostile.id);
    ASSERT_TRUE(by_id.contains(hostile.id));
    EXPECT_EQ(by_id[hostile.id][hostile.field], hostile.value);
  }
  const auto verified = kms::audit::verify_file(environment_->audit_path());
  EXPECT_TRUE(verified.ok) << verified.problem;
}

TEST_F(KmsdSurfaceTest, JsonLogIsOneValidObjectPerLineWhateverAClientSends) {
  ConfigOverrides overrides;
  overrides.log["format"] = "\"json\"";
  KmsdProcess kmsd(*environment_, environment_->write_config("json-log.toml", overrides));
  const std::vector<Hostile> sent = send_hostile_requests(kmsd, *environment_, "json");
  EXPECT_EQ(kmsd.terminate(), 0);
  const std::string log = kmsd.log();
  expect_no_raw_control_characters(log);
  std::map<std::string, boost::json::object> by_id;
  std::size_t lines = 0;
  for (const auto& line : lines_of(log)) {
    ++lines;
    boost::json::error_code ec;
    const boost::json::value value = boost::json::parse(line, ec);  // also checks UTF-8
    ASSERT_FALSE(ec) << "not one JSON value (" << ec.message() << "): " << line;
    ASSERT_TRUE(value.is_object()) << line;
    const auto& object = value.as_object();
    for (const char* key : {"time", "level", "msg"}) {
      ASSERT_TRUE(object.contains(key) && object.at(key).is_string()) << key << ": " << line;
    }
    EXPECT_NE(object.at("msg").as_string(), kForged) << line;
    if (object.at("msg").as_string() == "request") {
      by_id[std::string(object.at("id").as_string())] = object;
    }
  }
  EXPECT_GT(lines, sent.size());  // listening, the requests, draining, drained, stopped
  const std::string replacement = "\xef\xbf\xbd";  // U+FFFD for a byte that is not UTF-8
  std::string long_logged = "/";
  for (int i = 0; i < 63; ++i) long_logged += "\xc3\xa9";
  const std::vector<std::string> expected = {
      sent[0].value,  // valid UTF-8: verbatim
      "/bad" + replacement + "byte" + replacement + "(", sent[2].value,
      long_logged + replacement,  // the half character at the cut
      "sip:evil\"\n{\"time\":\"x\",\"level\":\"error\",\"msg\":\"forged\"}\r\n"
      "time=x level=error msg=forged\x1b[2J\t\\\x7f\x01" +
          replacement + "@ims.example.net"};
  ASSERT_EQ(sent.size(), expected.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    SCOPED_TRACE(sent[i].field + " of request " + sent[i].id);
    ASSERT_TRUE(by_id.contains(sent[i].id));
    const auto& object = by_id[sent[i].id];
    ASSERT_TRUE(object.contains(sent[i].field));
    EXPECT_EQ(std::string(object.at(sent[i].field).as_string()), expected[i]);
  }
  const auto verified = kms::audit::verify_file(environment_->audit_path("json-log.toml"));
  EXPECT_TRUE(verified.ok) << verified.problem;
}

// ---------------------------------------------------------------------------------------
// Nothing secret in the log

std::string hex(client::ByteView bytes, bool upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (const auto b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::string base64(client::ByteView bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// Every spelling of `bytes` a log might carry: raw, hex (both cases), base64, base64url.
std::vector<std::string> spellings(client::ByteView bytes) {
  return {std::string(bytes.begin(), bytes.end()), hex(bytes, false), hex(bytes, true),
          base64(bytes), client::base64url_encode(bytes)};
}

TEST_F(KmsdSurfaceTest, NothingSecretInTheLogAtDebugLevel) {
  KmsdProcess kmsd(*environment_, environment_->write_config("secrets.toml"),
                   {"--log-level", "debug"});
  const SeedFlow flow = run_seed_flow(kmsd, *environment_);
  ASSERT_EQ(flow.ue_keys.size(), 4u);
  ASSERT_EQ(flow.bridge_keys.size(), 3u);
  // Other paths too: a retransmission, a replay, a tampered envelope, an unknown conference.
  RawTlsConnection ue(kmsd.port(), pki().server_ca);
  const client::Secret r_a = client::UeClient::make_nonce(), r_b = client::UeClient::make_nonce();
  const kms::KeyRequest request = key_request(*environment_, kAlice, r_a, kBob, r_b);
  for (int i = 0; i < 2; ++i) {  // the second is a retransmission: the same answer
    EXPECT_EQ(exchange(ue, "POST", "/v1/key-request", "application/json",
                       kms::wire::key_request_to_json(request))
                  .status,
              200u);
  }
  const client::Secret r_c = client::UeClient::make_nonce();  // E_A again, a new E_B
  const kms::KeyRequest replay{
      kAlice, kBob, request.chair_envelope,
      ue_client(*environment_, kBob).responder_envelope(r_c, kAlice, kSuite)};
  EXPECT_EQ(exchange(ue, "POST", "/v1/key-request", "application/json",
                     kms::wire::key_request_to_json(replay))
                .status,
            409u);
  const client::Secret r_a2 = client::UeClient::make_nonce(), r_b2 = client::UeClient::make_nonce();
  kms::KeyRequest tampered = key_request(*environment_, kAlice, r_a2, kCarol, r_b2);
  tampered.chair_envelope.back() ^= 1;
  EXPECT_EQ(exchange(ue, "POST", "/v1/key-request", "application/json",
                     kms::wire::key_request_to_json(tampered))
                .status,
            403u);
  RawTlsConnection bridge(kmsd.port(), pki().server_ca, pki().bridge.cert, pki().bridge.key);
  EXPECT_EQ(exchange(bridge, "POST", "/v1/bridge/keys", "application/json",
                     kms::wire::bridge_request_to_json(kms::Bytes(16, 0x5a)))
                .status,
            404u);
  EXPECT_EQ(kmsd.terminate(), 0);

  struct Known {
    std::string name;
    std::vector<std::uint8_t> bytes;
  };
  std::vector<Known> secrets;
  const auto add = [&](const std::string& name, client::ByteView bytes) {
    secrets.push_back({name, std::vector<std::uint8_t>(bytes.begin(), bytes.end())});
  };
  add("R_A", flow.r_a);
  add("R_B", flow.r_invitee.at(kBob));
  add("R_C", flow.r_invitee.at(kCarol));
  for (const auto* nonce : {&r_a, &r_b, &r_c, &r_a2, &r_b2}) add("request nonce", *nonce);
  for (std::size_t i = 0; i < flow.ue_keys.size(); ++i) {
    add("UE media key " + std::to_string(i), flow.ue_keys[i].key);
    add("UE master key " + std::to_string(i), flow.ue_keys[i].master_key);
    add("UE master salt " + std::to_string(i), flow.ue_keys[i].master_salt);
  }
  for (std::size_t i = 0; i < flow.bridge_keys.size(); ++i) {
    add("key inside wrapped blob " + std::to_string(i), flow.bridge_keys[i].key);
    add("master key inside wrapped blob " + std::to_string(i), flow.bridge_keys[i].master_key);
  }
  for (const char* identity : {kAlice, kBob, kCarol, kBridgeId}) {
    add(std::string("root key of ") + identity, environment_->root_key(identity));
  }
  const std::string pin = environment_->token().user_pin().value();
  ASSERT_GE(pin.size(), 4u);

  const std::string log = kmsd.log();
  const std::string audit = read_text(environment_->audit_path("secrets.toml"));
  ASSERT_GT(lines_of(log).size(), 8u);
  // The search can find what is there: the conference id is in the log's audit companion,
  // the request ids in the log.
  EXPECT_NE(audit.find(hex(flow.conference_id, false)), std::string::npos);
  EXPECT_NE(log.find(flow.release.header("X-Request-Id")), std::string::npos);
  for (const auto& [file, text] : {std::pair{"kmsd log", &log}, std::pair{"audit log", &audit}}) {
    EXPECT_EQ(text->find(pin), std::string::npos) << "the user PIN is in the " << file;
    for (const auto& secret : secrets) {
      for (const auto& spelling : spellings(secret.bytes)) {
        EXPECT_EQ(text->find(spelling), std::string::npos) << secret.name << " is in the " << file;
      }
    }
  }
}

}  // namespace
}  // namespace kmstest
