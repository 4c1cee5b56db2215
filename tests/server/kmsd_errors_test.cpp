// kmsd's documented error paths end to end, each against a real kmsd process over TLS on
// loopback (issue 11): every code of docs/PROTOCOL.md's error table produced by a real
// request where one can be (status, code, the JSON body {"error","detail"} and the headers
// docs/SERVER.md promises), the transport refusals, the token failing behind kmsd (the
// fault module: token_unavailable, /readyz), `overloaded` from each of its sources (worker
// queue, session pool, registry database busy timeout, replay record), and /readyz while
// draining. Every expected status is a literal typed from the docs, never the product's
// own mapping; the one code no request can produce (internal_error) is checked in the
// mapping table against those literals.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "https_client.h"
#include "kms/client/bridge_client.h"
#include "kms/client/client_error.h"
#include "kms/client/envelope_builder.h"
#include "kms/client/ue_client.h"
#include "kms/core/base64url.h"
#include "kms/errors.h"
#include "kms/server/http_status.h"
#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "tls_test_client.h"

namespace kmstest {
namespace {

using Clock = std::chrono::steady_clock;
namespace client = kms::client;
namespace json = boost::json;

// docs/PROTOCOL.md "Errors", typed from the doc: code -> HTTP status (24 codes).
const std::map<std::string, unsigned> kDocumentedStatus = {
    {"malformed_request", 400},
    {"unsupported_version", 400},
    {"unknown_message_type", 400},
    {"profile_mismatch", 400},
    {"unsupported_suite", 400},
    {"suite_mismatch", 400},
    {"invalid_identity", 400},
    {"unknown_subscriber", 403},
    {"subscriber_revoked", 403},
    {"key_version_mismatch", 403},
    {"envelope_authentication_failed", 403},
    {"identity_mismatch", 403},
    {"stale_timestamp", 403},
    {"replay", 409},
    {"unknown_conference", 404},
    {"conference_expired", 410},
    {"bridge_not_provisioned", 403},
    {"bridge_revoked", 403},
    {"bridge_not_authorized", 403},
    {"audit_unavailable", 503},
    {"token_unavailable", 503},
    {"overloaded", 503},
    {"rate_limited", 429},
    {"internal_error", 500},
};

constexpr const char* kDave = "sip:dave@ims.example.net";      // provisioned, then revoked
constexpr const char* kNobody = "sip:nobody@ims.example.net";  // never provisioned
constexpr std::chrono::milliseconds kHeld{60000};  // a fault-module delay the test ends itself

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string to_hex(const kms::Bytes& bytes) {
  std::string out;
  for (const auto b : bytes) {
    out += "0123456789abcdef"[b >> 4];
    out += "0123456789abcdef"[b & 15];
  }
  return out;
}

std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// Waits for a condition with a generous deadline (never a sleep-then-assert).
bool eventually(const std::function<bool()>& condition,
                std::chrono::seconds deadline = std::chrono::seconds(30)) {
  const auto give_up = Clock::now() + deadline;
  while (!condition()) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// The fault module's control file (KMS_FAULT_DELAY_FILE): delays, `fail:FN=CKR` and
// `token=absent`, replaced with a rename so that kmsd never reads half a file.
bool write_control(const std::string& path, const std::string& text) {
  std::ofstream(path + ".tmp") << text << "\n";
  return std::rename((path + ".tmp").c_str(), path.c_str()) == 0;
}

// Clears the control file when the test leaves, before the futures holding slow requests
// are destroyed (declare it after them): a failed assertion never waits for a held call.
struct ReleaseOnExit {
  std::string path;
  ~ReleaseOnExit() { write_control(path, ""); }
};

// The JSON error of docs/SERVER.md "Errors" with the headers every response carries.
::testing::AssertionResult is_error(const RawResponse& response, unsigned status,
                                    const std::string& code) {
  const auto failure = [&] {
    return ::testing::AssertionFailure()
           << "(expected " << status << " " << code << ", got HTTP " << response.status << ", body "
           << response.body << ", headers" << response.headers << ") ";
  };
  if (response.status != status) return failure() << "wrong status";
  if (response.header("Content-Type") != "application/json") {
    return failure() << "Content-Type is not application/json";
  }
  if (response.header("Cache-Control") != "no-store") return failure() << "no Cache-Control";
  if (response.header("X-Request-Id").empty()) return failure() << "no X-Request-Id";
  boost::system::error_code ec;
  const json::value body = json::parse(response.body, ec);
  if (ec || !body.is_object()) return failure() << "body is not a JSON object";
  const json::object& object = body.as_object();
  if (object.size() != 2 || !object.contains("error") || !object.contains("detail")) {
    return failure() << "body is not exactly {\"error\", \"detail\"}";
  }
  if (!object.at("error").is_string() || object.at("error").as_string() != code) {
    return failure() << "wrong error code";
  }
  if (!object.at("detail").is_string()) return failure() << "detail is not a string";
  return ::testing::AssertionSuccess();
}

// The status docs/PROTOCOL.md gives the code.
::testing::AssertionResult is_documented_error(const RawResponse& response,
                                               const std::string& code) {
  return is_error(response, kDocumentedStatus.at(code), code);
}

// `overloaded` as docs/SERVER.md promises it: 503 with Retry-After: 1.
::testing::AssertionResult is_overloaded(const RawResponse& response) {
  auto result = is_documented_error(response, "overloaded");
  if (!result) return result;
  if (response.header("Retry-After") != "1") {
    return ::testing::AssertionFailure() << "no Retry-After: 1; headers" << response.headers;
  }
  return ::testing::AssertionSuccess();
}

// The registry database of the test environment, opened by the test beside kmsd.
class Database {
 public:
  explicit Database(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      throw std::runtime_error("cannot open " + path);
    }
    sqlite3_busy_timeout(db_, 30000);
  }
  ~Database() { sqlite3_close(db_); }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  bool exec(const std::string& sql) {
    char* error = nullptr;
    const bool ok = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) == SQLITE_OK;
    if (!ok) ADD_FAILURE() << sql << ": " << (error ? error : "?");
    sqlite3_free(error);
    return ok;
  }
  int changes() const { return sqlite3_changes(db_); }

 private:
  sqlite3* db_ = nullptr;
};

client::Secret read_root_key(const std::string& file) {
  std::istringstream in(read_text(file));
  for (std::string line; std::getline(in, line);) {
    // The plaintext export: 32 bytes of hex on the one line that is not a comment.
    if (line.size() != 64 || line[0] == '#') continue;
    kms::Bytes key;
    for (std::size_t i = 0; i < line.size(); i += 2) {
      key.push_back(static_cast<std::uint8_t>(std::stoi(line.substr(i, 2), nullptr, 16)));
    }
    return client::Secret(key);
  }
  throw std::runtime_error("no root key in " + file);
}

class KmsdErrorsTest : public ::testing::Test {
 protected:
  // One environment and one kmsd (on the fault module) for the suite; kmsd processes with
  // another configuration only where the configuration must differ.
  static void SetUpTestSuite() {
    environment_ = KmsdEnvironment::create().release();
    control_ = environment_->dir() + "/faults-main";
    kmsd_ = start_on_fault_module("errors.toml", {}, control_).release();
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    delete environment_;
  }
  void TearDown() override { write_control(control_, ""); }  // never leave a fault armed

  static std::unique_ptr<KmsdProcess> start_on_fault_module(
      const std::string& name, ConfigOverrides overrides, const std::string& control,
      std::vector<std::string> args = {}, std::map<std::string, std::string> environment = {}) {
    write_control(control, "");
    overrides.token_module = KMS_FAULT_MODULE_PATH;
    environment["KMS_FAULT_TARGET"] = environment_->token().module_path();
    environment["KMS_FAULT_DELAY_FILE"] = control;
    return std::make_unique<KmsdProcess>(*environment_, environment_->write_config(name, overrides),
                                         std::move(args), std::move(environment));
  }

  static const TestPki& pki() { return environment_->pki(); }
  static client::UeClient ue(const std::string& identity) {
    return ue_client(*environment_, identity);
  }
  static std::uint8_t profile_id() {
    return static_cast<std::uint8_t>(profile_of(environment_->profile()));
  }
  static kms::KeyRequest request(const std::string& chair, const client::Secret& r_a,
                                 const std::string& invitee) {
    return key_request(*environment_, chair, r_a, invitee, client::UeClient::make_nonce());
  }
  static kms::KeyRequest fresh_request() {
    return request(kAlice, client::UeClient::make_nonce(), kBob);
  }

  static RawResponse post(const KmsdProcess& kmsd, const std::string& target,
                          const std::string& body, const CertFiles* cert = nullptr) {
    return https_request(kmsd.port(), pki().server_ca, "POST", target, "application/json", body,
                         cert ? cert->cert : "", cert ? cert->key : "");
  }
  static RawResponse send(const KmsdProcess& kmsd, const kms::KeyRequest& request) {
    return post(kmsd, "/v1/key-request", kms::wire::key_request_to_json(request));
  }
  static RawResponse fetch(const KmsdProcess& kmsd, const kms::Bytes& conference_id,
                           const CertFiles& cert) {
    return post(kmsd, "/v1/bridge/keys", kms::wire::bridge_request_to_json(conference_id), &cert);
  }
  static RawResponse readyz(const KmsdProcess& kmsd) {
    return https_request(kmsd.port(), pki().server_ca, "GET", "/readyz", "", "");
  }
  // A conference admitted on kmsd (A invites B); returns its conf_id.
  static kms::Bytes admit(const KmsdProcess& kmsd, const client::Secret& r_a) {
    const RawResponse response = send(kmsd, request(kAlice, r_a, kBob));
    EXPECT_EQ(response.status, 200u) << response.body;
    return response.status == 200 ? kms::wire::key_response_from_json(response.body).conference_id
                                  : kms::Bytes{};
  }
  // A gauge or counter without labels from /metrics; -1 if absent.
  static long metric(const KmsdProcess& kmsd, const std::string& name) {
    const auto metrics = ue_connection(kmsd, pki())->get("/metrics");
    const std::string needle = "\n" + name + " ";
    const auto at = metrics.body.find(needle);
    return at == std::string::npos ? -1 : std::stol(metrics.body.substr(at + needle.size()));
  }
  // A UE connection that waits up to 60 s for an answer (requests held by the fault module).
  static std::unique_ptr<kms::tools::HttpsClient> patient_connection(const KmsdProcess& kmsd) {
    kms::tools::ClientTlsOptions tls;
    tls.ca_file = pki().server_ca;
    tls.timeout = std::chrono::seconds(60);
    return std::make_unique<kms::tools::HttpsClient>(kms::tools::ServerUrl::parse(kmsd.url()), tls);
  }
  static std::future<unsigned> send_patiently(const KmsdProcess& kmsd) {
    return std::async(std::launch::async, [&kmsd] {
      return patient_connection(kmsd)
          ->post_json("/v1/key-request", kms::wire::key_request_to_json(fresh_request()))
          .status;
    });
  }

  static KmsdEnvironment* environment_;
  static KmsdProcess* kmsd_;
  static std::string control_;
};

KmsdEnvironment* KmsdErrorsTest::environment_ = nullptr;
KmsdProcess* KmsdErrorsTest::kmsd_ = nullptr;
std::string KmsdErrorsTest::control_;

// ---------------------------------------------------------------------------------------
// The table itself: both docs and the product's mapping against the literals above.

TEST_F(KmsdErrorsTest, DocumentedStatusTableMatchesBothDocsAndTheProductMapping) {
  ASSERT_EQ(kDocumentedStatus.size(), 24u);

  // docs/PROTOCOL.md "Errors": | `code` | meaning | HTTP |
  const std::string protocol = read_text(KMS_SOURCE_DIR "/docs/PROTOCOL.md");
  const auto errors_at = protocol.find("\n## Errors\n");
  ASSERT_NE(errors_at, std::string::npos);
  const std::string errors =
      protocol.substr(errors_at, protocol.find("\n## ", errors_at + 1) - errors_at);
  std::map<std::string, unsigned> protocol_table;
  const std::regex protocol_row(R"(\n\| `([a-z_]+)` \| [^\n]* \| ([0-9]{3}) \|)");
  for (std::sregex_iterator row(errors.begin(), errors.end(), protocol_row), end; row != end;
       ++row) {
    protocol_table[(*row)[1]] = static_cast<unsigned>(std::stoul((*row)[2]));
  }
  EXPECT_EQ(protocol_table, kDocumentedStatus) << "docs/PROTOCOL.md's table changed";

  // docs/SERVER.md "Errors": | status | `code`, `code` ... |
  const std::string server = read_text(KMS_SOURCE_DIR "/docs/SERVER.md");
  const auto server_at = server.find("\n### Errors\n");
  ASSERT_NE(server_at, std::string::npos);
  const std::string server_errors =
      server.substr(server_at, server.find("\n## ", server_at + 1) - server_at);
  std::map<std::string, unsigned> server_table;
  const std::regex server_row(R"(\n\| ([0-9]{3}) \| ([^\n]*) \|)");
  const std::regex code(R"(`([a-z_]+)`)");
  for (std::sregex_iterator row(server_errors.begin(), server_errors.end(), server_row), end;
       row != end; ++row) {
    const std::string codes = (*row)[2];
    for (std::sregex_iterator c(codes.begin(), codes.end(), code); c != end; ++c) {
      server_table[(*c)[1]] = static_cast<unsigned>(std::stoul((*row)[1]));
    }
  }
  EXPECT_EQ(server_table, kDocumentedStatus) << "docs/SERVER.md disagrees with docs/PROTOCOL.md";

  // The product: every ErrorCode has a documented name and kms::server::http_status_for maps it to
  // the documented status. internal_error is checked only here (no request can produce it).
  std::set<std::string> names;
  for (int i = 0; i <= static_cast<int>(kms::ErrorCode::internal_error); ++i) {
    const auto code_value = static_cast<kms::ErrorCode>(i);
    const std::string name(kms::error_code_name(code_value));
    names.insert(name);
    ASSERT_TRUE(kDocumentedStatus.contains(name)) << name << " is not in docs/PROTOCOL.md";
    EXPECT_EQ(kms::server::http_status_for(code_value), kDocumentedStatus.at(name)) << name;
  }
  EXPECT_EQ(names.size(), kDocumentedStatus.size()) << "a documented code has no ErrorCode";
}

// The checker above rejects what the docs rule out (so the tests below can fail).
TEST(KmsdErrorCheckTest, RejectsAWrongStatusBodyShapeOrMissingHeaders) {
  const std::string headers =
      "\nHTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
      "Cache-Control: no-store\r\nX-Request-Id: ab-1\r\n";
  const auto response = [&](const std::string& head, const std::string& body) {
    RawResponse r;
    r.status = 409;
    r.headers = head;
    r.body = body;
    return r;
  };
  const std::string good = R"({"error":"replay","detail":"envelope already used"})";
  EXPECT_TRUE(is_documented_error(response(headers, good), "replay"));
  EXPECT_FALSE(is_documented_error(response(headers, good), "stale_timestamp"));
  EXPECT_FALSE(is_error(response(headers, good), 400, "replay"));
  for (const std::string body :
       {R"({"error":"replay"})", R"({"error":"replay","detail":"x","extra":1})",
        R"({"error":"replay","detail":5})", R"(["replay"])", "replay"}) {
    EXPECT_FALSE(is_documented_error(response(headers, body), "replay")) << body;
  }
  for (const std::string missing : {"Content-Type", "Cache-Control", "X-Request-Id"}) {
    std::string head = headers;
    head.replace(head.find("\n" + missing) + 1, missing.size(), "X-Other");
    EXPECT_FALSE(is_documented_error(response(head, good), "replay")) << missing;
  }
  std::string text_plain = headers;
  text_plain.replace(text_plain.find("application/json"), 16, "text/plain");
  EXPECT_FALSE(is_documented_error(response(text_plain, good), "replay"));
  RawResponse overloaded = response(headers, R"({"error":"overloaded","detail":"x"})");
  overloaded.status = 503;
  EXPECT_FALSE(is_overloaded(overloaded));  // no Retry-After
  overloaded.headers += "Retry-After: 1\r\n";
  EXPECT_TRUE(is_overloaded(overloaded));
}

// ---------------------------------------------------------------------------------------
// Key requests refused before anything is admitted: one case per check of docs/PROTOCOL.md
// "Key request processing", in its order.

struct RequestCase {
  std::string name;
  kms::KeyRequest request;
  std::string code;
};

TEST_F(KmsdErrorsTest, KeyRequestRefusalsHaveTheDocumentedStatusAndBody) {
  const client::UeClient alice = ue(kAlice);
  const client::UeClient bob = ue(kBob);
  const auto changed = [](std::function<void(kms::KeyRequest&)> change) {
    kms::KeyRequest request = fresh_request();
    change(request);
    return request;
  };
  const auto now = static_cast<std::uint64_t>(unix_now());
  const std::uint8_t other_profile = profile_id() == 1 ? 2 : 1;

  std::vector<RequestCase> cases;
  cases.push_back({"chair ID is not an IMS identity",
                   changed([](kms::KeyRequest& r) { r.chair_id = "alice@ims.example.net"; }),
                   "invalid_identity"});
  cases.push_back({"chair invites itself",
                   changed([](kms::KeyRequest& r) { r.responder_id = r.chair_id; }),
                   "invalid_identity"});
  // Well-formed JSON strings that break the identity rules (1..256 bytes): invalid_identity,
  // not malformed_request.
  cases.push_back({"empty chair ID", changed([](kms::KeyRequest& r) { r.chair_id.clear(); }),
                   "invalid_identity"});
  cases.push_back({"responder ID of 257 bytes", changed([](kms::KeyRequest& r) {
                     r.responder_id = "sip:" + std::string(237, 'b') + "@ims.example.net";
                   }),
                   "invalid_identity"});
  cases.push_back({"envelope version 2",
                   changed([](kms::KeyRequest& r) { r.chair_envelope[0] = 2; }),
                   "unsupported_version"});
  cases.push_back({"unknown envelope type",
                   changed([](kms::KeyRequest& r) { r.responder_envelope[1] = 0x07; }),
                   "unknown_message_type"});
  cases.push_back({"a response type offered as an envelope",
                   changed([](kms::KeyRequest& r) { r.chair_envelope[1] = 0x11; }),
                   "unknown_message_type"});
  cases.push_back({"envelope truncated below 90 bytes",
                   changed([](kms::KeyRequest& r) { r.chair_envelope.resize(89); }),
                   "malformed_request"});
  cases.push_back({"envelope over 592 bytes",
                   changed([](kms::KeyRequest& r) { r.responder_envelope.resize(593, 0); }),
                   "malformed_request"});
  // 90..592 bytes, but not the 80 + len(ID-A) + len(ID-B) its plain IDs make it: refused
  // before any cryptography (else envelope_authentication_failed).
  cases.push_back({"chair envelope one byte longer than its plain IDs make it",
                   changed([](kms::KeyRequest& r) { r.chair_envelope.push_back(0); }),
                   "malformed_request"});
  cases.push_back({"responder envelope made for a longer responder ID (Carol's, not Bob's)",
                   changed([&](kms::KeyRequest& r) {
                     r.responder_envelope = ue(kCarol).responder_envelope(
                         client::UeClient::make_nonce(), kAlice, kSuite);
                   }),
                   "malformed_request"});
  cases.push_back({"swapped envelopes", changed([](kms::KeyRequest& r) {
                     std::swap(r.chair_envelope, r.responder_envelope);
                   }),
                   "unknown_message_type"});
  cases.push_back({"another profile",
                   changed([&](kms::KeyRequest& r) { r.chair_envelope[2] = other_profile; }),
                   "profile_mismatch"});
  cases.push_back({"unknown suite", changed([](kms::KeyRequest& r) {
                     r.chair_envelope[3] = 3;
                     r.responder_envelope[3] = 3;
                   }),
                   "unsupported_suite"});
  {
    const client::Secret r_a = client::UeClient::make_nonce();
    cases.push_back({"E_A and E_B name different suites",
                     kms::KeyRequest{kAlice, kBob, alice.chair_envelope(r_a, kBob, kSuite),
                                     bob.responder_envelope(client::UeClient::make_nonce(), kAlice,
                                                            client::Suite::aead_aes_128_gcm)},
                     "suite_mismatch"});
  }
  for (const auto& [label, timestamp] : {std::pair{"past", now - 3600}, {"future", now + 3600}}) {
    client::EnvelopeOptions options;
    options.timestamp = timestamp;
    cases.push_back(
        {std::string("chair envelope from the ") + label,
         kms::KeyRequest{
             kAlice, kBob,
             alice.chair_envelope(client::UeClient::make_nonce(), kBob, kSuite, options),
             bob.responder_envelope(client::UeClient::make_nonce(), kAlice, kSuite)},
         "stale_timestamp"});
  }
  {
    const client::UeClient nobody(kNobody, client::UeClient::make_nonce(), 1,
                                  profile_of(environment_->profile()));
    cases.push_back(
        {"unprovisioned chair",
         kms::KeyRequest{kNobody, kBob,
                         nobody.chair_envelope(client::UeClient::make_nonce(), kBob, kSuite),
                         bob.responder_envelope(client::UeClient::make_nonce(), kNobody, kSuite)},
         "unknown_subscriber"});
  }
  {
    const client::UeClient bob_v2(kBob, environment_->root_key(kBob), 2,
                                  profile_of(environment_->profile()));
    cases.push_back(
        {"responder envelope names key version 2",
         kms::KeyRequest{kAlice, kBob,
                         alice.chair_envelope(client::UeClient::make_nonce(), kBob, kSuite),
                         bob_v2.responder_envelope(client::UeClient::make_nonce(), kAlice, kSuite)},
         "key_version_mismatch"});
  }
  cases.push_back({"GCM tag changed",
                   changed([](kms::KeyRequest& r) { r.responder_envelope.back() ^= 1; }),
                   "envelope_authentication_failed"});
  cases.push_back({"authenticated header changed (timestamp + 1)",
                   changed([](kms::KeyRequest& r) { r.chair_envelope[15] ^= 1; }),
                   "envelope_authentication_failed"});
  // kCarol has the length of kAlice (the envelopes keep the size their plain IDs imply).
  cases.push_back({"plain chair ID differs from the one both envelopes were made for",
                   changed([](kms::KeyRequest& r) { r.chair_id = kCarol; }),
                   "envelope_authentication_failed"});
  {
    // Authentic (the AAD carries the plain IDs), but the plaintext names another invitee.
    client::EnvelopeFields fields;
    fields.type = client::MessageType::chair_invite;
    fields.profile = profile_id();
    fields.suite = static_cast<std::uint8_t>(kSuite);
    fields.key_version = 1;
    fields.timestamp = now;
    const client::Secret iv_source = client::UeClient::make_nonce();
    fields.iv.assign(iv_source.data(), iv_source.data() + client::kIvSize);
    fields.chair_id = kAlice;
    fields.responder_id = kBob;
    fields.encrypted_chair_id = kAlice;
    // Another invitee whose ID has the length of kBob's, so that the envelope has the size
    // the plain IDs imply (else it is malformed_request before any cryptography).
    fields.encrypted_responder_id = "sip:eve@ims.example.net";
    cases.push_back(
        {"plaintext IDs differ from the plain IDs",
         kms::KeyRequest{
             kAlice, kBob,
             client::seal_envelope(alice.envelope_key(), fields, client::UeClient::make_nonce()),
             bob.responder_envelope(client::UeClient::make_nonce(), kAlice, kSuite)},
         "identity_mismatch"});
  }

  std::set<std::string> produced;
  for (const RequestCase& c : cases) {
    EXPECT_TRUE(is_documented_error(send(*kmsd_, c.request), c.code)) << c.name;
    produced.insert(c.code);
  }
  EXPECT_EQ(produced.size(), 12u);
  // None of them changed anything: the valid request of the same parties still works.
  EXPECT_EQ(send(*kmsd_, fresh_request()).status, 200u);
}

TEST_F(KmsdErrorsTest, MalformedBodiesAreRefusedWithMalformedRequest) {
  const kms::KeyRequest valid = fresh_request();
  const std::string chair_envelope = kms::base64url_encode(valid.chair_envelope);
  const std::string responder_envelope = kms::base64url_encode(valid.responder_envelope);
  const auto body = [&](const std::string& chair_id, const std::string& chair_b64,
                        const std::string& extra) {
    return "{\"chair_id\":" + chair_id + ",\"responder_id\":\"" + kBob +
           "\",\"chair_envelope\":\"" + chair_b64 + "\",\"responder_envelope\":\"" +
           responder_envelope + "\"" + extra + "}";
  };
  const std::string alice = std::string("\"") + kAlice + "\"";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"truncated JSON", "{\"chair_id\": "},
      {"not an object", "[1,2,3]"},
      {"base64url with padding", body(alice, chair_envelope + "=", "")},
      {"base64url with a character outside the alphabet", body(alice, "+" + chair_envelope, "")},
      {"unknown field", body(alice, chair_envelope, ",\"extra\":1")},
      {"chair_id of the wrong type", body("5", chair_envelope, "")},
      {"missing field", "{\"chair_id\":" + alice + "}"},
      // A key twice: boost::json alone keeps the last one (here the valid request), another
      // parser the first.
      {"chair_id twice", "{\"chair_id\":\"sip:mallory@ims.example.net\"," +
                             body(alice, chair_envelope, "").substr(1)},
      {"chair_id twice, once escaped",
       body(alice, chair_envelope, ",\"chair\\u005fid\":\"sip:mallory@ims.example.net\"")},
  };
  for (const auto& [name, text] : cases) {
    EXPECT_TRUE(is_documented_error(post(*kmsd_, "/v1/key-request", text), "malformed_request"))
        << name;
  }
  // The correct body of the same request is accepted (the cases above differ only as named).
  EXPECT_EQ(post(*kmsd_, "/v1/key-request", body(alice, chair_envelope, "")).status, 200u);

  // Bridge: a conf_id that is not 16 bytes, from a provisioned bridge.
  EXPECT_TRUE(
      is_documented_error(post(*kmsd_, "/v1/bridge/keys",
                               kms::wire::bridge_request_to_json(kms::Bytes(15, 1)), &pki().bridge),
                          "malformed_request"));
}

TEST_F(KmsdErrorsTest, TransportRefusalsUseMalformedRequestWithTheirOwnStatus) {
  // docs/SERVER.md "Errors": 404 unknown path, 405 wrong method (with Allow), 413 body too
  // large, 415 not JSON, 431 header too large, 400 not HTTP.
  const auto raw = [&](const std::string& method, const std::string& target,
                       const std::string& type, const std::string& body) {
    return https_request(kmsd_->port(), pki().server_ca, method, target, type, body);
  };
  EXPECT_TRUE(is_error(raw("POST", "/v1/no-such-endpoint", "application/json", "{}"), 404,
                       "malformed_request"));
  const RawResponse get_key_request = raw("GET", "/v1/key-request", "", "");
  EXPECT_TRUE(is_error(get_key_request, 405, "malformed_request"));
  EXPECT_EQ(get_key_request.header("Allow"), "POST");
  const RawResponse post_healthz = raw("POST", "/healthz", "application/json", "{}");
  EXPECT_TRUE(is_error(post_healthz, 405, "malformed_request"));
  EXPECT_EQ(post_healthz.header("Allow"), "GET");
  EXPECT_TRUE(is_error(raw("POST", "/v1/key-request", "application/json", std::string(16385, ' ')),
                       413, "malformed_request"));  // limits.max_body_bytes default 16384
  EXPECT_TRUE(
      is_error(raw("POST", "/v1/key-request", "text/plain", "{}"), 415, "malformed_request"));
  EXPECT_TRUE(is_error(raw("POST", "/v1/bridge/keys", "", "{}"), 415, "malformed_request"));
  // Content-Type parameters: a utf-8 charset (any case, quoted or not) is application/json;
  // any other charset is refused before the body is read as UTF-8 JSON.
  for (const std::string type :
       {"application/json; charset=utf-8", "Application/JSON;charset=\"UTF-8\""}) {
    EXPECT_TRUE(is_error(raw("POST", "/v1/key-request", type, "{}"), 400, "malformed_request"))
        << type;  // past the Content-Type check: the empty object lacks the fields
  }
  for (const std::string type : {"application/json; charset=iso-8859-1",
                                 "application/json; charset=utf-16", "application/json; x"}) {
    EXPECT_TRUE(is_error(raw("POST", "/v1/key-request", type, "{}"), 415, "malformed_request"))
        << type;
  }
  EXPECT_TRUE(is_error(raw("GET", "/healthz?" + std::string(8300, 'a'), "", ""), 431,
                       "malformed_request"));  // limits.max_header_bytes default 8192
  EXPECT_TRUE(is_error(raw("GET", "/healthz not-http", "", ""), 400, "malformed_request"));
  EXPECT_EQ(raw("GET", "/healthz", "", "").status, 200u);
}

// ---------------------------------------------------------------------------------------
// Refusals that depend on state: replay, revocation, conference and bridge states.

TEST_F(KmsdErrorsTest, AnEnvelopeUsedInAnotherRequestIsAReplay) {
  const kms::KeyRequest first = fresh_request();
  ASSERT_EQ(send(*kmsd_, first).status, 200u);
  EXPECT_EQ(send(*kmsd_, first).status, 200u);  // a retransmission is answered again
  kms::KeyRequest other = first;
  other.responder_envelope = ue(kBob).responder_envelope(client::UeClient::make_nonce(), kAlice,
                                                         kSuite);  // new E_B, old E_A
  EXPECT_TRUE(is_documented_error(send(*kmsd_, other), "replay"));
}

TEST_F(KmsdErrorsTest, ARequestWithAnotherSuiteThanTheConferencesIsASuiteMismatch) {
  const client::Secret r_a = client::UeClient::make_nonce();
  ASSERT_FALSE(admit(*kmsd_, r_a).empty());  // suite 1
  const auto gcm = client::Suite::aead_aes_128_gcm;
  const kms::KeyRequest carol{
      kAlice, kCarol, ue(kAlice).chair_envelope(r_a, kCarol, gcm),
      ue(kCarol).responder_envelope(client::UeClient::make_nonce(), kAlice, gcm)};
  EXPECT_TRUE(is_documented_error(send(*kmsd_, carol), "suite_mismatch"));
}

TEST_F(KmsdErrorsTest, ARevokedSubscriberIsRefusedOnItsNextRequest) {
  const std::string key_file = environment_->dir() + "/dave.key";
  const auto added = environment_->provision(
      {"subscriber", "add", kDave, "--insecure-plaintext-export", "--out", key_file});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const client::UeClient dave(kDave, read_root_key(key_file), 1,
                              profile_of(environment_->profile()));
  const auto dave_invites_bob = [&] {
    return kms::KeyRequest{
        kDave, kBob, dave.chair_envelope(client::UeClient::make_nonce(), kBob, kSuite),
        ue(kBob).responder_envelope(client::UeClient::make_nonce(), kDave, kSuite)};
  };
  ASSERT_EQ(send(*kmsd_, dave_invites_bob()).status, 200u);  // kmsd picked the new key up
  const auto revoked = environment_->provision({"subscriber", "revoke", kDave});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  EXPECT_TRUE(is_documented_error(send(*kmsd_, dave_invites_bob()), "subscriber_revoked"));
}

TEST_F(KmsdErrorsTest, ConferenceStatesUnknownExpiredAndAnotherProfile) {
  EXPECT_TRUE(
      is_documented_error(fetch(*kmsd_, kms::Bytes(16, 0x5a), pki().bridge), "unknown_conference"));

  // A conference past its expiry (the lifetime is at least 60 s, so the test moves
  // expires_at back in the registry instead of waiting): releases and key requests for it
  // are refused.
  const client::Secret r_a = client::UeClient::make_nonce();
  const kms::Bytes expired = admit(*kmsd_, r_a);
  ASSERT_FALSE(expired.empty());
  {
    Database db(environment_->dir() + "/kms.db");
    ASSERT_TRUE(db.exec("UPDATE conferences SET expires_at = " + std::to_string(unix_now() - 1) +
                        " WHERE conference_id = X'" + to_hex(expired) + "'"));
    ASSERT_EQ(db.changes(), 1);
  }
  EXPECT_TRUE(is_documented_error(fetch(*kmsd_, expired, pki().bridge), "conference_expired"));
  EXPECT_TRUE(
      is_documented_error(send(*kmsd_, request(kAlice, r_a, kCarol)), "conference_expired"));

  // A conference the registry holds with another profile (made by a deployment on another
  // token): the key request names this deployment's profile, not the conference's.
  const client::Secret r_a2 = client::UeClient::make_nonce();
  const kms::Bytes other_profile = admit(*kmsd_, r_a2);
  ASSERT_FALSE(other_profile.empty());
  {
    Database db(environment_->dir() + "/kms.db");
    ASSERT_TRUE(
        db.exec("UPDATE conferences SET profile = " + std::to_string(profile_id() == 1 ? 2 : 1) +
                " WHERE conference_id = X'" + to_hex(other_profile) + "'"));
    ASSERT_EQ(db.changes(), 1);
  }
  EXPECT_TRUE(is_documented_error(send(*kmsd_, request(kAlice, r_a2, kCarol)), "profile_mismatch"));
}

TEST_F(KmsdErrorsTest, BridgeRefusalsNotAuthorizedNotProvisionedAndRevoked) {
  const kms::Bytes bound = admit(*kmsd_, client::UeClient::make_nonce());
  ASSERT_FALSE(bound.empty());
  const std::string body = kms::wire::bridge_request_to_json(bound);
  EXPECT_TRUE(is_documented_error(post(*kmsd_, "/v1/bridge/keys", body), "bridge_not_authorized"))
      << "no client certificate";
  EXPECT_TRUE(is_documented_error(fetch(*kmsd_, bound, pki().bridge_unprovisioned),
                                  "bridge_not_provisioned"));
  ASSERT_EQ(fetch(*kmsd_, bound, pki().bridge).status, 200u);  // binds the conference to bridge1

  // bridge9 (the unprovisioned certificate's identity) is provisioned now: still not the
  // conference's bridge, but served for a conference of its own.
  const auto added = environment_->provision({"bridge", "add", kUnprovisionedBridgeId,
                                              "--insecure-plaintext-export", "--out",
                                              environment_->dir() + "/bridge9-root.key"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  EXPECT_TRUE(is_documented_error(fetch(*kmsd_, bound, pki().bridge_unprovisioned),
                                  "bridge_not_authorized"));
  const kms::Bytes own = admit(*kmsd_, client::UeClient::make_nonce());
  ASSERT_EQ(fetch(*kmsd_, own, pki().bridge_unprovisioned).status, 200u);
  const auto revoked = environment_->provision({"bridge", "revoke", kUnprovisionedBridgeId});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  EXPECT_TRUE(
      is_documented_error(fetch(*kmsd_, own, pki().bridge_unprovisioned), "bridge_revoked"));
}

// A bridge that missed a rotation of its key (kms-provision bridge rotate): the release
// says which bridge key version its items are wrapped under, so the bridge library reports
// key_version_mismatch instead of an unwrap failure of every item; a bridge that names the
// version it holds is refused with 403 key_version_mismatch, nothing released.
TEST_F(KmsdErrorsTest, ABridgeThatMissedARotationOfItsKeyIsToldSo) {
  const std::string bridge = "sip:bridge3@ims.example.net";
  const CertFiles cert = pki().issue_bridge(environment_->dir(), "bridge3", bridge);
  const std::string v1_file = environment_->dir() + "/bridge3.v1.key";
  auto result = environment_->provision(
      {"bridge", "add", bridge, "--insecure-plaintext-export", "--out", v1_file});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto profile = profile_of(environment_->profile());
  const client::BridgeClient v1(bridge, read_root_key(v1_file), profile, 1);
  const kms::Bytes conference = admit(*kmsd_, client::UeClient::make_nonce());
  ASSERT_FALSE(conference.empty());
  const auto items_of = [](const kms::BridgeRelease& release) {
    std::vector<client::BridgeItem> items;
    for (const kms::ReleasedKey& key : release.keys) {
      items.push_back({key.member_id, key.role, key.key_id, key.suite, key.wrapped});
    }
    return items;
  };
  const auto release_for = [&](std::optional<std::uint32_t> version) {
    return post(*kmsd_, "/v1/bridge/keys", kms::wire::bridge_request_to_json(conference, version),
                &cert);
  };

  RawResponse response = release_for(std::nullopt);
  ASSERT_EQ(response.status, 200u) << response.body;
  kms::BridgeRelease release = kms::wire::bridge_release_from_json(response.body);
  EXPECT_EQ(release.bridge_key_version, 1u);
  EXPECT_EQ(v1.open_release(conference, release.bridge_key_version, items_of(release)).size(), 2u);
  ASSERT_EQ(release_for(1).status, 200u);

  const std::string v2_file = environment_->dir() + "/bridge3.v2.key";
  result = environment_->provision(
      {"bridge", "rotate", bridge, "--insecure-plaintext-export", "--out", v2_file});
  ASSERT_EQ(result.exit_code, 0) << result.err;

  // Not saying which version it holds: released under version 2, and the v1 bridge is told.
  response = release_for(std::nullopt);
  ASSERT_EQ(response.status, 200u) << response.body;
  release = kms::wire::bridge_release_from_json(response.body);
  EXPECT_EQ(release.bridge_key_version, 2u);
  try {
    (void)v1.open_release(conference, release.bridge_key_version, items_of(release));
    ADD_FAILURE() << "a v1 bridge opened a release made under bridge key version 2";
  } catch (const client::ClientError& error) {
    EXPECT_EQ(error.code(), client::ClientErrorCode::key_version_mismatch) << error.what();
    EXPECT_NE(std::string(error.what()).find("version 2"), std::string::npos) << error.what();
  }
  // Without the version the items themselves only fail to unwrap.
  try {
    (void)v1.open(conference, items_of(release).front());
    ADD_FAILURE() << "a v1 bridge key unwrapped an item wrapped under v2";
  } catch (const client::ClientError& error) {
    EXPECT_EQ(error.code(), client::ClientErrorCode::unwrap_failed) << error.what();
  }

  // Saying it holds version 1: refused, with the documented status, nothing released.
  const std::size_t audit_before = read_text(environment_->audit_path("errors.toml")).size();
  response = release_for(1);
  EXPECT_TRUE(is_documented_error(response, "key_version_mismatch"));
  EXPECT_EQ(response.body.find("wrapped"), std::string::npos) << response.body;
  const std::string audited =
      read_text(environment_->audit_path("errors.toml")).substr(audit_before);
  EXPECT_NE(audited.find("\"outcome\":\"key_version_mismatch\""), std::string::npos) << audited;
  EXPECT_EQ(audited.find("\"event\":\"key_release\""), std::string::npos) << audited;

  // The new key, named or not, opens the release.
  const client::BridgeClient v2(bridge, read_root_key(v2_file), profile, 2);
  response = release_for(2);
  ASSERT_EQ(response.status, 200u) << response.body;
  release = kms::wire::bridge_release_from_json(response.body);
  EXPECT_EQ(v2.open_release(conference, release.bridge_key_version, items_of(release)).size(), 2u);
}

TEST_F(KmsdErrorsTest, AnUnwritableAuditLogGivesAuditUnavailable) {
  const kms::Bytes conference = admit(*kmsd_, client::UeClient::make_nonce());
  ASSERT_FALSE(conference.empty());
  ConfigOverrides overrides;
  overrides.audit_path = "/dev/full";  // every write fails with ENOSPC
  KmsdProcess kmsd(*environment_, environment_->write_config("errors-audit-full.toml", overrides));
  EXPECT_TRUE(is_documented_error(send(kmsd, fresh_request()), "audit_unavailable"));
  EXPECT_TRUE(is_documented_error(fetch(kmsd, conference, pki().bridge), "audit_unavailable"));
}

// ---------------------------------------------------------------------------------------
// The token failing behind kmsd (fault module): 503 token_unavailable, /readyz 503 while it
// is down, and both back once the token is.

TEST_F(KmsdErrorsTest, AFailingTokenGivesTokenUnavailableAndReadyzTurns503UntilItIsBack) {
  for (const std::string fault : {"token=absent", "fail:*=0x30" /* CKR_DEVICE_ERROR */}) {
    SCOPED_TRACE(fault);
    const kms::Bytes conference = admit(*kmsd_, client::UeClient::make_nonce());
    ASSERT_FALSE(conference.empty());
    ASSERT_EQ(readyz(*kmsd_).status, 200u);

    ASSERT_TRUE(write_control(control_, fault));
    const std::size_t log_before = kmsd_->log().size();
    const RawResponse refused = send(*kmsd_, fresh_request());
    EXPECT_TRUE(is_documented_error(refused, "token_unavailable"));
    EXPECT_EQ(refused.header("Retry-After"), "1");
    // The client gets the stable code only: no CKR names, slots or PKCS#11 calls.
    EXPECT_EQ(refused.body.find("CKR_"), std::string::npos) << refused.body;
    EXPECT_EQ(refused.body.find("slot"), std::string::npos) << refused.body;
    EXPECT_EQ(refused.body.find("C_"), std::string::npos) << refused.body;
    EXPECT_TRUE(is_documented_error(fetch(*kmsd_, conference, pki().bridge), "token_unavailable"));
    EXPECT_TRUE(is_documented_error(readyz(*kmsd_), "token_unavailable"));
    EXPECT_TRUE(is_documented_error(readyz(*kmsd_), "token_unavailable"));  // stays down
    // The operator's log has the PKCS#11 detail, at error level.
    const std::string outage_log = kmsd_->log().substr(log_before);
    EXPECT_NE(outage_log.find("CKR_"), std::string::npos) << outage_log;
    EXPECT_NE(outage_log.find("error"), std::string::npos) << outage_log;

    ASSERT_TRUE(write_control(control_, ""));
    // Ready again by itself (no key request needed first), then serving.
    EXPECT_TRUE(eventually([&] { return readyz(*kmsd_).status == 200; }))
        << "/readyz stayed 503 after the token came back";
    EXPECT_EQ(send(*kmsd_, fresh_request()).status, 200u);
    EXPECT_EQ(fetch(*kmsd_, conference, pki().bridge).status, 200u);
  }
}

// ---------------------------------------------------------------------------------------
// overloaded: 503 with Retry-After: 1, from each source docs/PROTOCOL.md names (the worker
// queue of docs/SERVER.md, the session pool's timeout, the registry database locked past
// its busy timeout, the replay record full).

TEST_F(KmsdErrorsTest, AFullWorkerQueueGivesOverloaded) {
  ConfigOverrides overrides;
  overrides.limits["max_pending_requests"] = "2";
  const std::string control = environment_->dir() + "/faults-queue";
  auto kmsd = start_on_fault_module("errors-queue.toml", overrides, control);
  ASSERT_TRUE(write_control(control, "C_Decrypt=" + std::to_string(kHeld.count())));
  auto first = send_patiently(*kmsd);
  auto second = send_patiently(*kmsd);
  ReleaseOnExit release{control};
  ASSERT_TRUE(eventually([&] { return metric(*kmsd, "kms_pending_requests") == 2; }))
      << kmsd->log();

  EXPECT_TRUE(is_overloaded(send(*kmsd, fresh_request())));
  EXPECT_TRUE(is_overloaded(readyz(*kmsd)));  // /readyz runs on the workers too
  EXPECT_EQ(metric(*kmsd, "kms_session_pool_acquire_timeouts_total"), 0);  // not the pool

  ASSERT_TRUE(write_control(control, ""));
  EXPECT_EQ(first.get(), 200u);
  EXPECT_EQ(second.get(), 200u);
  EXPECT_EQ(send(*kmsd, fresh_request()).status, 200u);
}

TEST_F(KmsdErrorsTest, NoTokenSessionWithinThePoolTimeoutGivesOverloaded) {
  const std::string control = environment_->dir() + "/faults-pool";
  auto kmsd = start_on_fault_module("errors-pool.toml", {}, control, {},
                                    {{"KMS_MAX_SESSIONS", "1"}});  // one worker session
  ASSERT_TRUE(write_control(control, "C_Decrypt=" + std::to_string(kHeld.count())));
  auto holder = send_patiently(*kmsd);
  ReleaseOnExit release{control};
  ASSERT_TRUE(eventually([&] { return metric(*kmsd, "kms_session_pool_in_use") == 1; }))
      << kmsd->log();

  // The second request waits for the one session (5 s, the pool's acquire timeout).
  const RawResponse waited = send(*kmsd, fresh_request());
  EXPECT_TRUE(is_overloaded(waited));
  EXPECT_EQ(metric(*kmsd, "kms_session_pool_acquire_timeouts_total"), 1);

  ASSERT_TRUE(write_control(control, ""));
  EXPECT_EQ(holder.get(), 200u);
  EXPECT_EQ(send(*kmsd, fresh_request()).status, 200u);
}

TEST_F(KmsdErrorsTest, ARegistryDatabaseLockedPastItsBusyTimeoutGivesOverloaded) {
  const kms::Bytes conference = admit(*kmsd_, client::UeClient::make_nonce());
  ASSERT_FALSE(conference.empty());
  {
    Database db(environment_->dir() + "/kms.db");
    ASSERT_TRUE(db.exec("BEGIN EXCLUSIVE"));  // another writer holds the database
    // The admission waits out the registry's busy timeout (5 s). (A key release commits
    // through the same group commit, so it would take another 5 s to show the same.)
    EXPECT_TRUE(is_overloaded(send(*kmsd_, fresh_request())));
    ASSERT_TRUE(db.exec("ROLLBACK"));
  }
  EXPECT_EQ(send(*kmsd_, fresh_request()).status, 200u);
  EXPECT_EQ(fetch(*kmsd_, conference, pki().bridge).status, 200u);
}

TEST_F(KmsdErrorsTest, AFullReplayRecordGivesOverloaded) {
  // 1000 live used-envelope records (the smallest replay_cache_size) before kmsd starts.
  const std::string marker = "X'" + std::string(64, '0') + "'";
  Database db(environment_->dir() + "/kms.db");
  ASSERT_TRUE(db.exec(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
      "INSERT INTO used_envelopes (digest, request_digest, expires_at) SELECT randomblob(32), " +
      marker + ", " + std::to_string(unix_now() + 3600) + " FROM n"));
  ConfigOverrides overrides;
  overrides.extra = "[protocol]\nreplay_cache_size = 1000\n";
  {
    KmsdProcess kmsd(*environment_, environment_->write_config("errors-replay.toml", overrides));
    EXPECT_TRUE(is_overloaded(send(kmsd, fresh_request())));
  }
  ASSERT_TRUE(db.exec("DELETE FROM used_envelopes WHERE request_digest = " + marker));
  EXPECT_EQ(db.changes(), 1000);
}

// ---------------------------------------------------------------------------------------
// Admission control (docs/SERVER.md): 429 rate_limited per source, 503 overloaded at the
// bound on requests in flight matched to the token's sessions.

TEST_F(KmsdErrorsTest, ASourcePastItsRateGetsRateLimitedWithRetryAfter) {
  ConfigOverrides overrides;
  overrides.limits["requests_per_second_per_source"] = "1";
  overrides.limits["request_burst_per_source"] = "3";
  KmsdProcess kmsd(*environment_, environment_->write_config("errors-rate.toml", overrides));
  // A burst of 3, then one a second: well before 30 requests, one is refused.
  RawResponse limited;
  int admitted = 0;
  for (int i = 0; i < 30; ++i) {
    limited = send(kmsd, fresh_request());
    if (limited.status != 200) break;
    ++admitted;
  }
  EXPECT_GE(admitted, 3);
  EXPECT_TRUE(is_documented_error(limited, "rate_limited"));
  const std::string retry_after = limited.header("Retry-After");
  ASSERT_FALSE(retry_after.empty()) << limited.headers;
  EXPECT_GE(std::stoi(retry_after), 1);
  EXPECT_EQ(metric(kmsd, "kms_admission_refusals_total{reason=\"rate_limited\"}"), 1);

  // Another source is served meanwhile, from its own bucket.
  const RawResponse other =
      https_request(kmsd.port(), pki().server_ca, "POST", "/v1/key-request", "application/json",
                    kms::wire::key_request_to_json(fresh_request()), "", "", "127.0.0.2");
  EXPECT_EQ(other.status, 200u) << other.body;
  // And the first source again once its Retry-After has passed.
  EXPECT_TRUE(eventually([&] { return send(kmsd, fresh_request()).status == 200; }));
}

TEST_F(KmsdErrorsTest, TheBoundOnRequestsInFlightFollowsTheTokensSessions) {
  ConfigOverrides overrides;
  overrides.limits["max_in_flight_per_session"] = "1";
  const std::string control = environment_->dir() + "/faults-in-flight";
  auto kmsd = start_on_fault_module("errors-in-flight.toml", overrides, control, {},
                                    {{"KMS_MAX_SESSIONS", "2"}});
  EXPECT_EQ(metric(*kmsd, "kms_admission_in_flight_limit"), 2);  // 1 per session, 2 sessions
  ASSERT_TRUE(write_control(control, "C_Decrypt=" + std::to_string(kHeld.count())));
  auto first = send_patiently(*kmsd);
  auto second = send_patiently(*kmsd);
  ReleaseOnExit release{control};
  ASSERT_TRUE(eventually([&] { return metric(*kmsd, "kms_pending_requests") == 2; }))
      << kmsd->log();

  // Refused at once, not queued behind the two (max_pending_requests is 256).
  EXPECT_TRUE(is_overloaded(send(*kmsd, fresh_request())));
  EXPECT_EQ(metric(*kmsd, "kms_admission_refusals_total{reason=\"overloaded\"}"), 1);
  EXPECT_EQ(metric(*kmsd, "kms_session_pool_acquire_timeouts_total"), 0);  // not the pool

  ASSERT_TRUE(write_control(control, ""));
  EXPECT_EQ(first.get(), 200u);
  EXPECT_EQ(second.get(), 200u);
  EXPECT_EQ(send(*kmsd, fresh_request()).status, 200u);
}

// ---------------------------------------------------------------------------------------
// Draining: a request read before SIGTERM is still answered, /readyz with 503 overloaded.

TEST_F(KmsdErrorsTest, ReadyzIs503WhileDraining) {
  const std::string control = environment_->dir() + "/faults-drain";
  auto kmsd = start_on_fault_module("errors-drain.toml", {}, control, {"--worker-threads", "1"});
  ASSERT_TRUE(write_control(control, "C_Decrypt=" + std::to_string(kHeld.count())));
  // The one worker holds a slow key request; /readyz waits behind it on the queue.
  auto slow = std::async(std::launch::async, [&] { return send(*kmsd, fresh_request()); });
  ASSERT_TRUE(eventually([&] { return metric(*kmsd, "kms_pending_requests") == 1; }))
      << kmsd->log();
  auto ready = std::async(std::launch::async, [&] { return readyz(*kmsd); });
  ReleaseOnExit release{control};
  ASSERT_TRUE(eventually([&] { return metric(*kmsd, "kms_pending_requests") == 2; }))
      << kmsd->log();

  kmsd->signal(SIGTERM);
  // Draining once new connections are refused (the listener closes after the flag is set).
  ASSERT_TRUE(eventually([&] {
    const int fd = open_silent_tcp(kmsd->port());
    if (fd < 0) return true;
    ::close(fd);
    return false;
  })) << kmsd->log();
  ASSERT_TRUE(write_control(control, ""));  // the in-flight request finishes

  const RawResponse answered = slow.get();
  EXPECT_EQ(answered.status, 200u) << answered.body;
  EXPECT_EQ(answered.header("Connection"), "close");
  const RawResponse draining = ready.get();
  EXPECT_TRUE(is_overloaded(draining));
  EXPECT_EQ(draining.header("Connection"), "close");
  EXPECT_EQ(kmsd->terminate(), 0) << kmsd->log();
}

}  // namespace
}  // namespace kmstest
