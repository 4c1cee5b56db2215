// kms-client: plays the UE and bridge roles against kmsd's HTTPS API (docs/SERVER.md),
// with kms_client for the protocol crypto. Exit codes: 0 ok, 1 the server refused (its
// error code is printed), 2 usage or local file problem, 3 transport/TLS failure,
// 4 a response that does not open (wrong key, tampered).
#include <openssl/crypto.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "https_client.h"
#include "key_files.h"
#include "kms/client/base64url.h"
#include "kms/client/bridge_client.h"
#include "kms/client/client_error.h"
#include "kms/client/ue_client.h"
#include "kms/server/wire.h"
#include "kms/version.h"
#include "load_generator.h"

namespace {

using namespace kms::tools;
namespace client = kms::client;

constexpr int kRefused = 1;
constexpr int kUsage = 2;
constexpr int kTransport = 3;
constexpr int kBadResponse = 4;

class Refused : public std::runtime_error {
 public:
  Refused(unsigned status, std::string code, const std::string& detail)
      : std::runtime_error("server refused (HTTP " + std::to_string(status) + "): " + code +
                           (detail.empty() ? "" : ": " + detail)),
        code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

struct Common {
  std::string server = "https://127.0.0.1:8443";
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  int timeout_ms = 10000;
  // nullopt: what the key file says (format 2), else aes-ecb-sha256 and 1.
  std::optional<std::string> profile;
  int suite = 1;
  std::optional<std::uint32_t> key_version;
  std::optional<std::string> personalisation_key_file;
};

client::Profile profile_of(const std::string& name) {
  if (name == "aes-ecb-sha256") return client::Profile::aes_ecb_sha256;
  if (name == "sp800-108-cmac") return client::Profile::sp800_108_cmac;
  throw CLI::ValidationError("--profile", "must be aes-ecb-sha256 or sp800-108-cmac");
}

// A root key with the key version and profile it is used with: --key-version and
// --profile when given (they override the file, e.g. to make a KMS refuse), else the key
// file's format 2 header, else (a format 1 file) 1 and aes-ecb-sha256.
struct RootKey {
  client::Secret key;
  std::uint32_t key_version = 1;
  client::Profile profile = client::Profile::aes_ecb_sha256;
};

RootKey load_root_key(const std::string& path, const Common& common) {
  RootKeyFile file = read_root_key_file(path, common.personalisation_key_file);
  RootKey out;
  out.key = std::move(file.key);
  out.key_version = common.key_version.value_or(file.key_version.value_or(1));
  out.profile = common.profile ? profile_of(*common.profile)
                               : file.profile.value_or(client::Profile::aes_ecb_sha256);
  return out;
}

client::Suite suite_of(int id) {
  if (id == 1) return client::Suite::aes_cm_128_hmac_sha1_80;
  if (id == 2) return client::Suite::aead_aes_128_gcm;
  throw CLI::ValidationError("--suite",
                             "must be 1 (AES_CM_128_HMAC_SHA1_80) or 2 (AEAD_AES_128_GCM)");
}

HttpsClient connect(const Common& common, bool with_client_cert) {
  ClientTlsOptions tls;
  tls.ca_file = common.ca_file;
  if (with_client_cert) {
    tls.cert_file = common.cert_file;
    tls.key_file = common.key_file;
  }
  tls.timeout = std::chrono::milliseconds(common.timeout_ms);
  return HttpsClient(ServerUrl::parse(common.server), tls);
}

std::string require_ok(const HttpResult& result) {
  if (result.status == 200) return result.body;
  if (auto error = kms::wire::error_from_json(result.body)) {
    throw Refused(result.status, error->error, error->detail);
  }
  throw Refused(result.status, "http_" + std::to_string(result.status), result.body.substr(0, 200));
}

void add_server_options(CLI::App* command, Common& common, bool bridge) {
  command->add_option("--server", common.server, "kmsd URL, https://HOST:PORT")
      ->capture_default_str();
  command->add_option("--ca", common.ca_file, "CA certificate(s) that sign kmsd's certificate")
      ->required()
      ->check(CLI::ExistingFile);
  command->add_option("--timeout-ms", common.timeout_ms, "socket timeout")->capture_default_str();
  if (bridge) {
    command->add_option("--cert", common.cert_file, "bridge client certificate (PEM)")
        ->check(CLI::ExistingFile);
    command->add_option("--cert-key", common.key_file, "its private key (PEM)")
        ->check(CLI::ExistingFile);
  }
}

void add_protocol_options(CLI::App* command, Common& common) {
  command
      ->add_option("--profile", common.profile,
                   "token profile of the deployment (default: the key file's, else "
                   "aes-ecb-sha256)")
      ->check(CLI::IsMember({"aes-ecb-sha256", "sp800-108-cmac"}));
  command
      ->add_option("--suite", common.suite,
                   "SRTP suite id (1 AES_CM_128_HMAC_SHA1_80, 2 AEAD_AES_128_GCM)")
      ->capture_default_str();
  command->add_option("--key-version", common.key_version,
                      "root key version (default: the key file's, else 1)");
  command->add_option("--personalisation-key-file", common.personalisation_key_file,
                      "personalisation key (hex) when the root key file is wrapped under it");
}

// Relayed from UE-B to UE-A: E_A(R_A, K1) and the conference id.
std::string chair_relay_json(const kms::KeyResponse& response, const std::string& responder) {
  boost::json::object object;
  object["responder_id"] = responder;
  object["conference_id"] = client::base64url_encode(response.conference_id);
  object["chair_response"] = client::base64url_encode(response.chair_response);
  return boost::json::serialize(object) + "\n";
}

// One subcommand: its parsed CLI11 command and what running it does.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

// --- ue invite ---
struct InviteOptions {
  std::string identity, key_file, state_file, invitee, out_file;
};

int run_invite(const InviteOptions& options, const Common& common) {
  const client::Suite suite = suite_of(common.suite);
  const RootKey key = load_root_key(options.key_file, common);
  const client::UeClient ue_client(options.identity, key.key, key.key_version, key.profile);
  const ChairState state = load_or_create_chair_state(options.state_file, options.identity);
  const kms::Bytes envelope = ue_client.chair_envelope(state.nonce, options.invitee, suite);
  write_text(options.out_file, client::base64url_encode(envelope) + "\n", false);
  std::cerr << "E_A for " << options.invitee << " written to " << options.out_file << "\n";
  return 0;
}

Command add_invite(CLI::App* ue, Common& common) {
  auto options = std::make_shared<InviteOptions>();
  auto* invite = ue->add_subcommand(
      "invite",
      "Chair (steps 1-2): build E_A(R_A, ID-A, ID-B) for an invitee; R_A is kept in "
      "--state (created on first use, reused for every invitee of the conference)");
  invite->add_option("--id", options->identity, "chair identity (ID-A)")->required();
  invite->add_option("--key-file", options->key_file, "chair root key file (kms-provision export)")
      ->required();
  invite->add_option("--state", options->state_file, "chair state file (holds R_A, 0600)")
      ->required();
  invite->add_option("--invitee", options->invitee, "invitee identity (ID-B)")->required();
  invite->add_option("--out", options->out_file, "write E_A (base64url) here; - for stdout")
      ->required();
  add_protocol_options(invite, common);
  return {invite, [options, &common] { return run_invite(*options, common); }};
}

// --- ue request ---
struct RequestOptions {
  std::string identity, key_file, chair, envelope_file, out_relay, out_key;
};

int run_request(const RequestOptions& options, const Common& common) {
  const client::Suite suite = suite_of(common.suite);
  const RootKey key = load_root_key(options.key_file, common);
  const client::UeClient ue_client(options.identity, key.key, key.key_version, key.profile);
  std::string envelope_text = read_text(options.envelope_file);
  while (!envelope_text.empty() && std::isspace(static_cast<unsigned char>(envelope_text.back()))) {
    envelope_text.pop_back();
  }
  auto chair_envelope = client::base64url_decode(envelope_text);
  if (!chair_envelope) throw std::runtime_error(options.envelope_file + ": not base64url");
  const client::Secret r_b = client::UeClient::make_nonce();
  kms::KeyRequest key_request;
  key_request.chair_id = options.chair;
  key_request.responder_id = options.identity;
  key_request.chair_envelope = *chair_envelope;
  key_request.responder_envelope = ue_client.responder_envelope(r_b, options.chair, suite);
  HttpsClient http = connect(common, false);
  const std::string body =
      require_ok(http.post_json("/v1/key-request", kms::wire::key_request_to_json(key_request)));
  const kms::KeyResponse response = kms::wire::key_response_from_json(body);
  const client::MediaKey media = ue_client.open_responder_response(
      response.responder_response, r_b, options.chair, suite, response.conference_id);
  write_media_key(options.out_key, options.identity, media);
  write_text(options.out_relay, chair_relay_json(response, options.identity), false);
  std::cout << "conference " << client::base64url_encode(response.conference_id) << " key_id "
            << client::base64url_encode(media.key_id) << "\n";
  return 0;
}

Command add_request(CLI::App* ue, Common& common) {
  auto options = std::make_shared<RequestOptions>();
  auto* request = ue->add_subcommand(
      "request",
      "Responder (steps 3-7): send ID-A, ID-B, E_A and a new E_B to kmsd; keep K2; "
      "write the chair's part (E_A(R_A, K1) + conference id) to relay to the chair");
  request->add_option("--id", options->identity, "responder identity (ID-B)")->required();
  request->add_option("--key-file", options->key_file, "responder root key file")->required();
  request->add_option("--chair", options->chair, "chair identity (ID-A)")->required();
  request
      ->add_option("--chair-envelope", options->envelope_file,
                   "file with E_A (base64url) from the chair")
      ->required();
  request
      ->add_option("--out-relay", options->out_relay, "write the relay for the chair here (JSON)")
      ->required();
  request
      ->add_option("--out-key", options->out_key,
                   "write the responder's media key here (JSON, 0600)")
      ->required();
  add_server_options(request, common, false);
  add_protocol_options(request, common);
  return {request, [options, &common] { return run_request(*options, common); }};
}

// --- ue open ---
struct OpenOptions {
  std::string identity, key_file, state_file, relay_file, out_key;
};

int run_open(const OpenOptions& options, const Common& common) {
  const client::Suite suite = suite_of(common.suite);
  const RootKey key = load_root_key(options.key_file, common);
  const client::UeClient ue_client(options.identity, key.key, key.key_version, key.profile);
  const ChairState state = read_chair_state(options.state_file);
  const boost::json::value relay = boost::json::parse(read_text(options.relay_file));
  const auto& object = relay.as_object();
  const std::string responder_id(object.at("responder_id").as_string());
  auto chair_response = client::base64url_decode(object.at("chair_response").as_string());
  if (!chair_response) {
    throw std::runtime_error(options.relay_file + ": chair_response not base64url");
  }
  const client::MediaKey media =
      ue_client.open_chair_response(*chair_response, state.nonce, responder_id, suite);
  write_media_key(options.out_key, options.identity, media);
  std::cout << "conference " << client::base64url_encode(media.conference_id) << " key_id "
            << client::base64url_encode(media.key_id) << "\n";
  return 0;
}

Command add_open(CLI::App* ue, Common& common) {
  auto options = std::make_shared<OpenOptions>();
  auto* open = ue->add_subcommand(
      "open", "Chair (step 8): open E_A(R_A, K1) relayed by an invitee; write K1");
  open->add_option("--id", options->identity, "chair identity (ID-A)")->required();
  open->add_option("--key-file", options->key_file, "chair root key file")->required();
  open->add_option("--state", options->state_file, "chair state file (R_A)")->required();
  open->add_option("--relay", options->relay_file, "relay file from `ue request --out-relay`")
      ->required();
  open->add_option("--out-key", options->out_key,
                   "write the chair's media key K1 here (JSON, 0600)")
      ->required();
  add_protocol_options(open, common);
  return {open, [options, &common] { return run_open(*options, common); }};
}

// --- bridge fetch ---
struct FetchOptions {
  std::string identity, key_file, conference, out_file;
};

int run_fetch(const FetchOptions& options, const Common& common) {
  suite_of(common.suite);  // the release names each key's suite; --suite is still checked
  if (common.cert_file.empty()) std::cerr << "kms-client: warning: no --cert: kmsd will refuse\n";
  const RootKey key = load_root_key(options.key_file, common);
  const client::BridgeClient bridge_client(options.identity, key.key, key.profile, key.key_version);
  auto conference_id = client::base64url_decode(options.conference);
  if (!conference_id) throw CLI::ValidationError("--conference", "not base64url");
  HttpsClient http = connect(common, true);
  // The request names the bridge key version held here: kmsd refuses another current
  // version (key_version_mismatch) before releasing anything.
  const std::string body = require_ok(http.post_json(
      "/v1/bridge/keys",
      kms::wire::bridge_request_to_json(*conference_id, bridge_client.key_version())));
  const kms::BridgeRelease release = kms::wire::bridge_release_from_json(body);
  std::vector<client::BridgeItem> items;
  for (const kms::ReleasedKey& item : release.keys) {
    items.push_back({item.member_id, item.role, item.key_id, item.suite, item.wrapped});
  }
  const std::vector<client::MediaKey> opened =
      bridge_client.open_release(release.conference_id, release.bridge_key_version, items);
  boost::json::array keys;
  for (std::size_t i = 0; i < release.keys.size(); ++i) {
    const kms::ReleasedKey& item = release.keys[i];
    const client::MediaKey& media = opened[i];
    boost::json::object entry =
        boost::json::parse(media_key_json(item.member_id, media)).as_object();
    entry.erase("identity");
    entry.erase("conference_id");
    entry["member_id"] = item.member_id;
    entry["role"] = item.role;
    keys.push_back(std::move(entry));
    std::cout << "member " << item.member_id << " role " << int(item.role) << " key_id "
              << client::base64url_encode(item.key_id) << "\n";
  }
  boost::json::object out;
  out["bridge_id"] = options.identity;
  out["conference_id"] = client::base64url_encode(release.conference_id);
  out["expires_at"] = release.expires_at;
  out["keys"] = std::move(keys);
  std::string text = boost::json::serialize(out) + "\n";
  write_text(options.out_file, text, true);
  OPENSSL_cleanse(text.data(), text.size());
  return 0;
}

Command add_fetch(CLI::App* bridge, Common& common) {
  auto options = std::make_shared<FetchOptions>();
  auto* fetch = bridge->add_subcommand(
      "fetch", "Figure 20: fetch and open the media keys of every admitted member");
  fetch->add_option("--id", options->identity, "bridge identity (the SAN URI of its certificate)")
      ->required();
  fetch->add_option("--key-file", options->key_file, "bridge root key file (kms-provision export)")
      ->required();
  fetch
      ->add_option("--conference", options->conference,
                   "conference id (base64url, from a relay file or "
                   "`ue request` output)")
      ->required();
  fetch->add_option("--out", options->out_file, "write the opened keys here (JSON, 0600)")
      ->required();
  add_server_options(fetch, common, true);
  add_protocol_options(fetch, common);
  return {fetch, [options, &common] { return run_fetch(*options, common); }};
}

// --- health ---
int run_health(const Common& common) {
  HttpsClient http = connect(common, false);
  const HttpResult live = http.get("/healthz");
  const HttpResult ready = http.get("/readyz");
  std::cout << "healthz " << live.status << " " << live.body << "\nreadyz " << ready.status << " "
            << ready.body << "\n";
  return live.status == 200 && ready.status == 200 ? 0 : kRefused;
}

Command add_health(CLI::App& app, Common& common) {
  auto* health = app.add_subcommand("health", "GET /healthz and /readyz");
  add_server_options(health, common, false);
  return {health, [&common] { return run_health(common); }};
}


// --- check-keys ---
struct CheckKeysOptions {
  std::string bridge_keys_file;
  std::vector<std::string> key_files;
};

int run_check_keys(const CheckKeysOptions& options) {
  const auto bridge_keys = read_bridge_keys(options.bridge_keys_file);
  bool ok = true;
  for (std::size_t i = 0; i < bridge_keys.size(); ++i) {
    for (std::size_t j = i + 1; j < bridge_keys.size(); ++j) {
      if (client::equal_constant_time(bridge_keys[i].master_key, bridge_keys[j].master_key)) {
        std::cout << "SAME KEY for " << bridge_keys[i].identity << " and "
                  << bridge_keys[j].identity << "\n";
        ok = false;
      }
    }
  }
  for (const auto& file : options.key_files) {
    const MediaKeyFile key = read_media_key(file);
    const MediaKeyFile* match = nullptr;
    for (const auto& bridge_key : bridge_keys) {
      if (bridge_key.identity == key.identity) match = &bridge_key;
    }
    const bool equal = match && match->suite == key.suite && match->key_id == key.key_id &&
                       client::equal_constant_time(match->master_key, key.master_key) &&
                       client::equal_constant_time(match->master_salt, key.master_salt);
    std::cout << (equal ? "match   " : "MISMATCH") << " " << key.identity << " (" << file
              << ") key_id " << client::base64url_encode(key.key_id) << "\n";
    ok = ok && equal;
  }
  return ok ? 0 : kBadResponse;
}

Command add_check_keys(CLI::App& app) {
  auto options = std::make_shared<CheckKeysOptions>();
  auto* check =
      app.add_subcommand("check-keys",
                         "Compare UE media key files with the bridge's copies: each must equal the "
                         "bridge's key for that member, and all members' keys must differ");
  check
      ->add_option("--bridge-keys", options->bridge_keys_file,
                   "bridge keys file (bridge fetch --out)")
      ->required();
  check
      ->add_option("KEY_FILES", options->key_files,
                   "UE media key files (ue request/open --out-key)")
      ->required();
  return {check, [options] { return run_check_keys(*options); }};
}

// The exit code of a failed command (the header comment lists them).
int report_failure(CLI::App& app) {
  try {
    throw;
  } catch (const Refused& error) {
    std::cerr << "kms-client: " << error.what() << "\n";
    return kRefused;
  } catch (const TransportError& error) {
    std::cerr << "kms-client: " << error.what() << "\n";
    return kTransport;
  } catch (const client::ClientError& error) {
    std::cerr << "kms-client: response does not open: " << error.what() << "\n";
    return kBadResponse;
  } catch (const kms::ProtocolError& error) {
    std::cerr << "kms-client: bad response from the server: " << error.what() << "\n";
    return kBadResponse;
  } catch (const CLI::Error& error) {
    return app.exit(error) == 0 ? 0 : kUsage;
  } catch (const std::exception& error) {
    std::cerr << "kms-client: " << error.what() << "\n";
    return kUsage;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "kms-client: the UE and bridge roles of the conference-call KMS protocol over "
      "kmsd's HTTPS API (see docs/SERVER.md)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kms-client " KMS_VERSION);
  Common common;

  auto* ue = app.add_subcommand("ue", "UE roles: chair (invite, open) and responder (request)");
  ue->require_subcommand(1);
  auto* bridge = app.add_subcommand("bridge", "Conference bridge role (mutual TLS)");
  bridge->require_subcommand(1);
  const std::vector<Command> commands{add_invite(ue, common),  add_request(ue, common),
                                      add_open(ue, common),    add_fetch(bridge, common),
                                      add_health(app, common), add_check_keys(app)};
  add_load_command(app);  // kms-client load: load_generator.cpp (its callback exits)

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // app.exit prints the problem (or the help); CLI11's own codes are not kms-client's.
    return app.exit(error) == 0 ? 0 : kUsage;
  }

  try {
    for (const Command& command : commands) {
      if (command.app->parsed()) return command.run();
    }
  } catch (...) {
    return report_failure(app);
  }
  return kUsage;
}
