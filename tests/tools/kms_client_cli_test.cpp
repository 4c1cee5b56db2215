// kms-client's exit codes (docs/SERVER.md "kms-client and kms-media", and the tool's
// header): 0 ok, 1 refused by the server (its error code printed), 2 usage or local files,
// 3 transport/TLS, 4 a response that does not open. The real binary, a real kmsd.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "key_files.h"
#include "tools_fixture.h"

namespace {

using kmstest::kAlice;
using kmstest::kBob;
using kmstest::kBridgeId;
using kmstest::kCarol;
using toolstest::environment;
using toolstest::kmsd;
using toolstest::run;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A loopback port nobody listens on (bound, then closed).
std::uint16_t closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

class KmsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kmsd();  // started once for the program
    dir_ = toolstest::test_dir();
  }

  // `ue invite` with valid arguments plus `extra`.
  std::vector<std::string> invite_args(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> argv = {KMS_CLIENT_BIN,
                                     "ue",
                                     "invite",
                                     "--id",
                                     kAlice,
                                     "--key-file",
                                     environment().key_file(kAlice),
                                     "--state",
                                     dir_ + "/a.state",
                                     "--invitee",
                                     kBob,
                                     "--out",
                                     dir_ + "/e.b64"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  std::string dir_;
};

TEST_F(KmsClientTest, ExitZeroForTheSeedFlowAndHealth) {
  auto r = run({KMS_CLIENT_BIN, "health"}, true);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("healthz 200"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("readyz 200"), std::string::npos) << r.out;

  const auto bob = toolstest::invite(dir_, kAlice, kBob);
  ASSERT_EQ(bob.invite.exit_code, 0) << bob.invite.err;
  ASSERT_EQ(bob.request.exit_code, 0) << bob.request.err;
  r = run({KMS_CLIENT_BIN, "ue", "open", "--id", kAlice, "--key-file",
           environment().key_file(kAlice), "--state", bob.state, "--relay", bob.relay, "--out-key",
           dir_ + "/a.media", "--profile", environment().profile()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(
      std::filesystem::status(dir_ + "/a.media").permissions() & std::filesystem::perms::group_read,
      std::filesystem::perms::none);  // secrets are written 0600
}

TEST_F(KmsClientTest, ExitTwoForUsageErrors) {
  for (const std::vector<std::string>& argv : {
           std::vector<std::string>{KMS_CLIENT_BIN},                       // no command
           {KMS_CLIENT_BIN, "frobnicate"},                                 // unknown command
           {KMS_CLIENT_BIN, "ue", "invite", "--id", kAlice},               // missing options
           {KMS_CLIENT_BIN, "health", "--server", "https://127.0.0.1:1"},  // --ca required
           {KMS_CLIENT_BIN, "health", "--ca", dir_ + "/missing-ca.pem"},   // not a file
           {KMS_CLIENT_BIN, "ue", "invite", "--bogus-option"},             // unknown option
       }) {
    SCOPED_TRACE(argv.size() > 1 ? argv[1] : "(none)");
    const auto r = run(argv);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  // Values checked after parsing.
  auto r = run(invite_args({"--suite", "3"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--suite"), std::string::npos) << r.err;
  r = run(invite_args({"--profile", "no-such-profile"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = run({KMS_CLIENT_BIN, "bridge", "fetch", "--id", kBridgeId, "--key-file",
           environment().key_file(kBridgeId), "--conference", "not*base64url", "--out",
           dir_ + "/keys.json", "--cert", environment().pki().bridge.cert, "--cert-key",
           environment().pki().bridge.key},
          true);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--conference"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/keys.json"));

  r = run({KMS_CLIENT_BIN, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("ue"), std::string::npos);
}

TEST_F(KmsClientTest, ExitTwoForBadLocalFiles) {
  const std::string missing = dir_ + "/missing.key";
  const std::string no_hex = dir_ + "/no-hex.key";
  write(no_hex, "# INSECURE plaintext root key (hex)\nnot hex at all\n");
  const std::string short_key = dir_ + "/short.key";
  write(short_key, "# INSECURE plaintext root key (hex)\n" + std::string(32, 'a') + "\n");
  // A personalisation-wrapped export (kms-provision's comment line) needs the
  // personalisation key, and the right one.
  const std::string wrapped = dir_ + "/wrapped.key";
  write(wrapped,
        "# root key of sip:alice@ims.example.net, RFC 5649-wrapped under "
        "personalisation key p1 (hex)\n" +
            std::string(80, 'b') + "\n");
  const std::string personalisation = dir_ + "/p1.key";
  write(personalisation, std::string(64, 'c') + "\n");

  const struct {
    std::vector<std::string> key_args;
    std::string message;
  } cases[] = {
      {{"--key-file", missing}, "cannot read " + missing},
      {{"--key-file", no_hex}, no_hex + ": no hex key line"},
      {{"--key-file", short_key}, short_key + ": root key is not 32 bytes"},
      {{"--key-file", wrapped}, "give --personalisation-key-file"},
      {{"--key-file", wrapped, "--personalisation-key-file", personalisation},
       "cannot unwrap the root key with the personalisation key"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.message);
    std::vector<std::string> argv = {KMS_CLIENT_BIN, "ue",      "invite",          "--id",
                                     kAlice,         "--state", dir_ + "/a.state", "--invitee",
                                     kBob,           "--out",   dir_ + "/e.b64"};
    argv.insert(argv.end(), c.key_args.begin(), c.key_args.end());
    const auto r = run(argv);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(toolstest::one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/e.b64"));
  }
  // A relay file that is not there (the chair's side).
  const auto r = run({KMS_CLIENT_BIN, "ue", "open", "--id", kAlice, "--key-file",
                      environment().key_file(kAlice), "--state", dir_ + "/none.state", "--relay",
                      dir_ + "/none.relay", "--out-key", dir_ + "/a.media"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(toolstest::one_line(r.err)) << r.err;
}

TEST_F(KmsClientTest, ExitThreeForConnectionAndTlsFailures) {
  const auto bob = toolstest::invite(dir_, kAlice, kBob);
  ASSERT_EQ(bob.invite.exit_code, 0) << bob.invite.err;
  std::filesystem::remove(bob.media);  // from the request to the real kmsd
  std::filesystem::remove(bob.relay);
  const std::string url = "https://127.0.0.1:" + std::to_string(closed_port());
  auto r = run({KMS_CLIENT_BIN,
                "ue",
                "request",
                "--id",
                kBob,
                "--key-file",
                environment().key_file(kBob),
                "--chair",
                kAlice,
                "--chair-envelope",
                bob.envelope,
                "--out-relay",
                bob.relay,
                "--out-key",
                bob.media,
                "--server",
                url,
                "--ca",
                environment().pki().server_ca,
                "--profile",
                environment().profile()});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("cannot connect"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(bob.media));

  // kmsd is there, but its certificate does not chain to the CA given.
  r = run(
      {KMS_CLIENT_BIN, "health", "--server", kmsd().url(), "--ca", environment().pki().bridge_ca});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("TLS handshake"), std::string::npos) << r.err;
  // A CA file that is not a certificate.
  const std::string not_pem = dir_ + "/not.pem";
  write(not_pem, "not a certificate\n");
  r = run({KMS_CLIENT_BIN, "health", "--server", kmsd().url(), "--ca", not_pem});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("cannot load CA file"), std::string::npos) << r.err;
}

TEST_F(KmsClientTest, ExitOneWhenTheServerRefusesWithItsErrorCode) {
  // Both envelopes claim key version 2; the subscribers are at version 1.
  auto bob = toolstest::invite(dir_, kAlice, kBob, {"--key-version", "2"});
  ASSERT_EQ(bob.invite.exit_code, 0) << bob.invite.err;
  EXPECT_EQ(bob.request.exit_code, 1) << bob.request.err;
  EXPECT_TRUE(toolstest::one_line(bob.request.err)) << bob.request.err;
  EXPECT_NE(bob.request.err.find("server refused (HTTP 403): key_version_mismatch"),
            std::string::npos)
      << bob.request.err;
  EXPECT_FALSE(std::filesystem::exists(bob.media));
  EXPECT_FALSE(std::filesystem::exists(bob.relay));

  // An identity kmsd does not know (Carol's key under another name).
  const std::string e_a = dir_ + "/stranger.ea";
  auto r =
      run({KMS_CLIENT_BIN, "ue", "invite", "--id", kAlice, "--key-file",
           environment().key_file(kAlice), "--state", dir_ + "/a2.state", "--invitee",
           "sip:stranger@ims.example.net", "--out", e_a, "--profile", environment().profile()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run(
      {KMS_CLIENT_BIN, "ue", "request", "--id", "sip:stranger@ims.example.net", "--key-file",
       environment().key_file(kCarol), "--chair", kAlice, "--chair-envelope", e_a, "--out-relay",
       dir_ + "/s.relay", "--out-key", dir_ + "/s.media", "--profile", environment().profile()},
      true);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("unknown_subscriber"), std::string::npos) << r.err;

  // A bridge fetch for a conference that was never admitted.
  r = run({KMS_CLIENT_BIN, "bridge", "fetch", "--id", kBridgeId, "--key-file",
           environment().key_file(kBridgeId), "--conference", "AAAAAAAAAAAAAAAAAAAAAA", "--out",
           dir_ + "/keys.json", "--cert", environment().pki().bridge.cert, "--cert-key",
           environment().pki().bridge.key},
          true);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("unknown_conference"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/keys.json"));
}

TEST_F(KmsClientTest, ExitFourForAResponseThatDoesNotOpen) {
  const auto bob = toolstest::invite(dir_, kAlice, kBob);
  ASSERT_EQ(bob.invite.exit_code, 0) << bob.invite.err;
  ASSERT_EQ(bob.request.exit_code, 0) << bob.request.err;
  // The chair opens kmsd's real response with another conference's R_A ...
  const std::string other_state = dir_ + "/other.state";
  auto r = run({KMS_CLIENT_BIN, "ue", "invite", "--id", kAlice, "--key-file",
                environment().key_file(kAlice), "--state", other_state, "--invitee", kCarol,
                "--out", dir_ + "/other.ea", "--profile", environment().profile()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run({KMS_CLIENT_BIN, "ue", "open", "--id", kAlice, "--key-file",
           environment().key_file(kAlice), "--state", other_state, "--relay", bob.relay,
           "--out-key", dir_ + "/a.media", "--profile", environment().profile()});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_TRUE(toolstest::one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("response does not open"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a.media"));
  // ... or with another subscriber's root key.
  r = run({KMS_CLIENT_BIN, "ue", "open", "--id", kAlice, "--key-file",
           environment().key_file(kCarol), "--state", bob.state, "--relay", bob.relay, "--out-key",
           dir_ + "/a.media", "--profile", environment().profile()});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a.media"));
  // The right state and key open it.
  r = run({KMS_CLIENT_BIN, "ue", "open", "--id", kAlice, "--key-file",
           environment().key_file(kAlice), "--state", bob.state, "--relay", bob.relay, "--out-key",
           dir_ + "/a.media", "--profile", environment().profile()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// The conference id a relay file names (kms-client ue request --out-relay).
std::string relay_conference(const std::string& relay) {
  const boost::json::value value = boost::json::parse(kms::tools::read_text(relay));
  return std::string(value.as_object().at("conference_id").as_string());
}

// A format 1 export (kms-provision before the header fields): the file without its
// "# name: value" lines.
std::string format_one_copy(const std::string& path) {
  std::istringstream in(kms::tools::read_text(path));
  std::string out;
  for (std::string line; std::getline(in, line);) {
    const bool field = line.rfind("# ", 0) == 0 && line.find(": ") != std::string::npos &&
                       line.find(' ', 2) > line.find(": ");
    if (!field) out += line + "\n";
  }
  const std::string copy = path + ".format1";
  write(copy, out);
  return copy;
}

// Issue 9: a bridge that missed a rotation of its key. kms-client sends the bridge key
// version its key file holds; kmsd refuses another current version with
// key_version_mismatch (exit 1, the code and both versions printed), nothing written; the
// new key file fetches and opens the keys.
TEST_F(KmsClientTest, ABridgeFetchWithARotatedBridgeKeyNamesTheVersions) {
  const std::string bridge = "sip:bridge2@ims.example.net";
  const kmstest::CertFiles cert = environment().pki().issue_bridge(dir_, "bridge2", bridge);
  const std::string v1 = dir_ + "/bridge2.v1.key";
  auto r = environment().provision(
      {"bridge", "add", bridge, "--insecure-plaintext-export", "--out", v1});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto bob = toolstest::invite(dir_, kAlice, kBob);
  ASSERT_EQ(bob.request.exit_code, 0) << bob.request.err;
  const std::string conference = relay_conference(bob.relay);
  const auto fetch = [&](const std::string& key_file, const std::string& out) {
    return run(
        {KMS_CLIENT_BIN, "bridge", "fetch", "--id", bridge, "--key-file", key_file, "--conference",
         conference, "--out", out, "--cert", cert.cert, "--cert-key", cert.key},
        true);
  };
  r = fetch(v1, dir_ + "/v1.keys");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const std::string v2 = dir_ + "/bridge2.v2.key";
  r = environment().provision(
      {"bridge", "rotate", bridge, "--insecure-plaintext-export", "--out", v2});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& stale : {v1, format_one_copy(v1)}) {  // header or default: 1
    SCOPED_TRACE(stale);
    r = fetch(stale, dir_ + "/stale.keys");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_TRUE(toolstest::one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("server refused (HTTP 403): key_version_mismatch: the bridge holds key "
                         "version 1, its current key version is 2"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/stale.keys"));
  }
  r = fetch(v2, dir_ + "/v2.keys");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run({KMS_CLIENT_BIN, "check-keys", "--bridge-keys", dir_ + "/v2.keys", bob.media});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// docs/OPERATIONS.md "Root key export files": kms-client takes key_version and profile from
// a format 2 file's header; a format 1 file (no header) is read as version 1 and the
// --profile given (default aes-ecb-sha256); --key-version / --profile override the file.
TEST_F(KmsClientTest, RootKeyFilesCarryTheirKeyVersionAndProfile) {
  const std::string erin = "sip:erin@ims.example.net";
  const std::string v1 = dir_ + "/erin.v1.key", v2 = dir_ + "/erin.v2.key";
  auto r = environment().provision(
      {"subscriber", "add", erin, "--insecure-plaintext-export", "--out", v1});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = environment().provision(
      {"subscriber", "rotate", erin, "--insecure-plaintext-export", "--out", v2});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_NE(kms::tools::read_text(v2).find("\n# key_version: 2\n"), std::string::npos);

  // Alice (format 2, version 1) invites Erin; Erin's request uses `key_file` and `extra`.
  int n = 0;
  const auto request = [&](const std::string& key_file, const std::vector<std::string>& extra) {
    const std::string tag = dir_ + "/" + std::to_string(++n);
    auto invited = run({KMS_CLIENT_BIN, "ue", "invite", "--id", kAlice, "--key-file",
                        environment().key_file(kAlice), "--state", tag + ".state", "--invitee",
                        erin, "--out", tag + ".ea"});
    EXPECT_EQ(invited.exit_code, 0) << invited.err;
    std::vector<std::string> argv = {
        KMS_CLIENT_BIN, "ue",          "request",      "--id",      erin,
        "--key-file",   key_file,      "--chair",      kAlice,      "--chair-envelope",
        tag + ".ea",    "--out-relay", tag + ".relay", "--out-key", tag + ".media"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv, true);
  };
  // No --key-version, no --profile: the header's version 2 and profile.
  r = request(v2, {});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The same key as format 1: version 1 unless --key-version says otherwise.
  const std::string v2_format1 = format_one_copy(v2);
  ASSERT_EQ(kms::tools::read_text(v2_format1).find("key_version"), std::string::npos);
  r = request(v2_format1, {});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("key_version_mismatch: responder envelope names key version 1, current "
                       "is 2"),
            std::string::npos)
      << r.err;
  r = request(v2_format1, {"--key-version", "2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Format 1: the profile is --profile's (default aes-ecb-sha256); another is refused.
  const std::string other =
      environment().profile() == "aes-ecb-sha256" ? "sp800-108-cmac" : "aes-ecb-sha256";
  r = request(v2_format1, {"--key-version", "2", "--profile", other});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("profile_mismatch"), std::string::npos) << r.err;
  // The command line overrides the header.
  r = request(v2, {"--key-version", "1"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("key_version_mismatch"), std::string::npos) << r.err;

  // A header kms-client cannot read is a local file problem (exit 2), never a guess.
  const std::string text = kms::tools::read_text(v2);
  const auto with = [&](const std::string& from, const std::string& to) {
    std::string changed = text;
    changed.replace(changed.find(from), from.size(), to);
    const std::string path = dir_ + "/erin." + std::to_string(++n) + ".key";
    write(path, changed);
    return path;
  };
  for (const auto& [file, message] : std::vector<std::pair<std::string, std::string>>{
           {with("# format: 2", "# format: 3"), "export format 3 is not known"},
           {with("# key_version: 2", "# key_version: 0"), "key_version \"0\" is not"},
           {with("# key_version: 2\n", ""), "without header field key_version"},
           {with("# profile: ", "# profile: x"), "is not known"},
           {with("# wrapping: none", "# wrapping: rot13"), "wrapping \"rot13\" is not known"},
           {with("# kind: subscriber", "# kind: subscriber\n# kind: bridge"), "given twice"},
       }) {
    SCOPED_TRACE(message);
    r = request(file, {});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
}

}  // namespace
