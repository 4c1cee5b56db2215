// kms-provision commands and options as docs/OPERATIONS.md and --help describe them, run
// as the real binary on SoftHSM and NSS softoken: list and show output (plain and --json),
// --out - , bulk --format, --pin-env, rotation between the storage modes, and the exit
// codes 1, 5, 13 and 14 produced for real.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <regex>

#include "cli_fixture.h"
#include "hsm/error.h"
#include "key_proof.h"
#include "sanitizer_build.h"
#include "tokens/key_store.h"

namespace {

using clitest::Bytes;
using clitest::CliTest;
using clitest::hex;
using tokens::IdentityKind;

const std::vector<std::string> kKmsKeys = {"kms/master", "kms/storage", "kms/transport"};

std::vector<std::string> kms_keys_and(std::vector<std::string> labels) {
  labels.insert(labels.end(), kKmsKeys.begin(), kKmsKeys.end());
  std::sort(labels.begin(), labels.end());
  return labels;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A word for the shell, single-quoted.
std::string shell_quote(const std::string& word) {
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class CommandsTest : public CliTest {
 protected:
  // Creates the (empty) database, so that a failure can be checked to leave it unchanged.
  void create_database() { ASSERT_EQ(cli({"subscriber", "list"}).exit_code, 0); }

  Bytes import(const std::string& kind, const std::string& identity,
               const std::vector<std::string>& global = {}) {
    const Bytes key = testkdf::random_bytes(32);
    std::vector<std::string> args = global;
    args.insert(args.end(), {kind, "import", identity, "--wrapped-hex",
                             hex(testkdf::wrap_pad(transport_, key))});
    const auto result = cli(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return key;
  }

  // The current key of an identity resolved from the token and the database, as kmsd does.
  tokens::ResolvedKey resolve(tokens::KeyStore& store, const std::string& identity) {
    return store.resolve(IdentityKind::subscriber, identity);
  }

  // Runs kms-provision (standard arguments + args) with its stdout on /dev/full.
  testsupport::CommandResult cli_stdout_full(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = base_args();
    argv.insert(argv.end(), args.begin(), args.end());
    std::string command = "exec";
    for (const auto& word : argv) command += " " + shell_quote(word);
    return testsupport::run_command({"/bin/sh", "-c", command + " >/dev/full"},
                                    token_->environment());
  }

  // Checks a failure's exit code and one-line message, and that the token and the database
  // are what they were before it.
  void expect_failure(const testsupport::CommandResult& result, int exit_code,
                      const std::string& message_part, const std::vector<std::string>& objects,
                      const std::string& database) {
    EXPECT_EQ(result.exit_code, exit_code) << result.err;
    EXPECT_TRUE(clitest::one_line(result.err)) << "stderr: [" << result.err << "]";
    EXPECT_EQ(result.err.rfind("kms-provision: error: ", 0), 0u) << result.err;
    EXPECT_NE(result.err.find(message_part), std::string::npos) << result.err;
    EXPECT_EQ(token_objects(), objects);
    EXPECT_EQ(database_snapshot(), database);
  }
};

const std::regex kTimestamp("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ");

TEST_P(CommandsTest, ListShowsEveryIdentityOfItsKindPlainAndJson) {
  init();
  auto result = cli({"subscriber", "list"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "");
  result = cli({"--json", "subscriber", "list"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "[]\n");

  import("subscriber", "sip:a@ims.example.net");
  import("subscriber", "tel:+12015550100", {"--key-store", "token"});
  import("bridge", "sip:bridge1@conf.ims.example.net");
  ASSERT_EQ(cli({"subscriber", "revoke", "tel:+12015550100"}).exit_code, 0);

  result = cli({"subscriber", "list"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto lines = split_lines(result.out);
  ASSERT_EQ(lines.size(), 2u) << result.out;  // subscribers only, in identity order
  const std::regex line(
      "(\\S+)  (active|revoked)  v(\\d+)  (wrapped|token)  "
      "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ");
  std::smatch match;
  ASSERT_TRUE(std::regex_match(lines[0], match, line)) << lines[0];
  EXPECT_EQ(match[1], "sip:a@ims.example.net");
  EXPECT_EQ(match[2], "active");
  EXPECT_EQ(match[3], "1");
  EXPECT_EQ(match[4], "wrapped");
  ASSERT_TRUE(std::regex_match(lines[1], match, line)) << lines[1];
  EXPECT_EQ(match[1], "tel:+12015550100");
  EXPECT_EQ(match[2], "revoked");
  EXPECT_EQ(match[4], "token");

  result = cli({"--json", "subscriber", "list"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto list = boost::json::parse(result.out).as_array();
  ASSERT_EQ(list.size(), 2u);
  const auto& first = list[0].as_object();
  EXPECT_EQ(first.at("identity").as_string(), "sip:a@ims.example.net");
  EXPECT_EQ(first.at("kind").as_string(), "subscriber");
  EXPECT_EQ(first.at("status").as_string(), "active");
  EXPECT_EQ(first.at("key_version").as_int64(), 1);
  EXPECT_EQ(first.at("store").as_string(), "wrapped");
  EXPECT_TRUE(std::regex_match(std::string(first.at("created_at").as_string()), kTimestamp));
  EXPECT_TRUE(std::regex_match(std::string(first.at("updated_at").as_string()), kTimestamp));
  EXPECT_EQ(list[1].as_object().at("status").as_string(), "revoked");
  EXPECT_EQ(list[1].as_object().at("store").as_string(), "token");

  result = cli({"subscriber", "list", "--status", "active"});
  EXPECT_EQ(split_lines(result.out).size(), 1u) << result.out;
  EXPECT_EQ(result.out.rfind("sip:a@ims.example.net  active", 0), 0u) << result.out;
  result = cli({"--json", "subscriber", "list", "--status", "revoked"});
  ASSERT_EQ(boost::json::parse(result.out).as_array().size(), 1u);
  result = cli({"subscriber", "list", "--status", "gone"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;

  result = cli({"bridge", "list"});
  ASSERT_EQ(split_lines(result.out).size(), 1u) << result.out;
  EXPECT_EQ(result.out.rfind("sip:bridge1@conf.ims.example.net  active  v1  wrapped  ", 0), 0u)
      << result.out;
}

TEST_P(CommandsTest, BridgeShowPlainAndJson) {
  init();
  import("bridge", "sip:bridge1@conf.ims.example.net");
  auto result = cli({"bridge", "show", "sip:bridge1@conf.ims.example.net"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto lines = split_lines(result.out);
  ASSERT_EQ(lines.size(), 7u) << result.out;
  EXPECT_EQ(lines[0], "identity    sip:bridge1@conf.ims.example.net");
  EXPECT_EQ(lines[1], "kind        bridge");
  EXPECT_EQ(lines[2], "status      active");
  EXPECT_EQ(lines[3], "key version 1");
  EXPECT_EQ(lines[4], "store       wrapped");
  EXPECT_TRUE(std::regex_match(lines[5], std::regex("created     .*"))) << lines[5];
  EXPECT_TRUE(std::regex_search(lines[5], kTimestamp)) << lines[5];
  EXPECT_TRUE(std::regex_match(lines[6], std::regex("updated     .*"))) << lines[6];

  result = cli({"--json", "bridge", "show", "sip:bridge1@conf.ims.example.net"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto shown = boost::json::parse(result.out).as_object();
  EXPECT_EQ(shown.at("identity").as_string(), "sip:bridge1@conf.ims.example.net");
  EXPECT_EQ(shown.at("kind").as_string(), "bridge");
  EXPECT_EQ(shown.at("status").as_string(), "active");
  EXPECT_EQ(shown.at("key_version").as_int64(), 1);

  // Bridges and subscribers are separate: a bridge is not a subscriber.
  result = cli({"subscriber", "show", "sip:bridge1@conf.ims.example.net"});
  EXPECT_EQ(result.exit_code, 6) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
}

// `--out -` writes the export to stdout and nothing else there: the key can be piped on.
TEST_P(CommandsTest, OutDashWritesTheExportToStdout) {
  init();
  auto result = cli({"subscriber", "add", "sip:plain@ims.example.net",
                     "--insecure-plaintext-export", "--out", "-"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // The export (format 2, docs/OPERATIONS.md "Root key export files"): the comment line,
  // six header fields, the key; nothing else.
  auto lines = split_lines(result.out);
  ASSERT_EQ(lines.size(), 8u) << "stdout must hold the export only: " << result.out;
  EXPECT_EQ(lines[0], "# INSECURE plaintext root key of sip:plain@ims.example.net (hex)");
  EXPECT_EQ(std::vector<std::string>(lines.begin() + 1, lines.begin() + 7),
            (std::vector<std::string>{"# format: 2", "# identity: sip:plain@ims.example.net",
                                      "# kind: subscriber", "# key_version: 1",
                                      "# profile: " + token_->profile_name(), "# wrapping: none"}));
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:plain@ims.example.net",
                               clitest::unhex(lines[7])));
  EXPECT_NE(result.err.find("WARNING"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists("-"));

  const Bytes personalisation = personalisation_key("factory1");
  result = cli({"bridge", "add", "sip:bridge1@conf.ims.example.net", "--personalisation-key",
                "factory1", "--out", "-"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err, "");
  lines = split_lines(result.out);
  ASSERT_EQ(lines.size(), 8u) << "stdout must hold the export only: " << result.out;
  EXPECT_EQ(lines[0].rfind("# root key of sip:bridge1@conf.ims.example.net, RFC 5649-wrapped", 0),
            0u)
      << lines[0];
  EXPECT_EQ(lines[6], "# wrapping: personalisation-key factory1");
  EXPECT_TRUE(stored_key_holds(IdentityKind::bridge, "sip:bridge1@conf.ims.example.net",
                               testkdf::unwrap_pad(personalisation, clitest::unhex(lines[7]))));

  // rotate takes the export options of add, --out - included.
  result = cli({"subscriber", "rotate", "sip:plain@ims.example.net", "--personalisation-key",
                "factory1", "--out", "-"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  lines = split_lines(result.out);
  ASSERT_EQ(lines.size(), 8u) << "stdout must hold the export only: " << result.out;
  EXPECT_EQ(lines[4], "# key_version: 2");
  const Bytes v2 = testkdf::unwrap_pad(personalisation, clitest::unhex(lines[7]));
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:plain@ims.example.net", v2));
}

// An export that cannot be written to stdout is a failure like a file that cannot be
// written: nothing is stored (the key would exist nowhere but in the token).
TEST_P(CommandsTest, OutDashOnAFullDeviceFailsAndStoresNothing) {
  init();
  create_database();
  const auto objects = token_objects();
  const auto database = database_snapshot();
  auto result = cli_stdout_full({"subscriber", "add", "sip:lost@ims.example.net",
                                 "--insecure-plaintext-export", "--out", "-"});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("stdout"), std::string::npos) << result.err;
  EXPECT_EQ(token_objects(), objects);
  EXPECT_EQ(database_snapshot(), database);

  import("subscriber", "sip:kept@ims.example.net");
  const auto before_rotate = database_snapshot();
  result = cli_stdout_full({"subscriber", "rotate", "sip:kept@ims.example.net",
                            "--insecure-plaintext-export", "--out", "-"});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(database_snapshot(), before_rotate);
}

TEST_P(CommandsTest, BulkFormatOptionOverridesTheExtension) {
  init();
  const Bytes a = testkdf::random_bytes(32), b = testkdf::random_bytes(32),
              c = testkdf::random_bytes(32);
  // JSON in a file whose name says nothing.
  const std::string json_file = dir_->path() + "/keys.txt";
  clitest::write_file(json_file, "[{\"identity\": \"sip:a@ims.example.net\", \"wrapped_key\": \"" +
                                     hex(testkdf::wrap_pad(transport_, a)) + "\"}]");
  auto result = cli({"subscriber", "import", "--file", json_file});  // taken as CSV
  EXPECT_EQ(result.exit_code, 12) << result.err;
  EXPECT_EQ(tokens::KeyDatabase(database_).count(IdentityKind::subscriber), 0u);
  result = cli({"subscriber", "import", "--file", json_file, "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("imported 1 subscribers, 0 failed"), std::string::npos) << result.out;
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:a@ims.example.net", a));

  // CSV in a file named .json.
  const std::string csv_file = dir_->path() + "/keys.json";
  clitest::write_file(csv_file, "identity,wrapped_key\nsip:b@ims.example.net," +
                                    hex(testkdf::wrap_pad(transport_, b)) + "\n");
  result = cli({"subscriber", "import", "--file", csv_file, "--format", "csv"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:b@ims.example.net", b));

  // JSON Lines with --format json (numbered by line).
  const std::string lines_file = dir_->path() + "/keys.lines";
  clitest::write_file(lines_file, "{\"identity\": \"sip:c@ims.example.net\", \"wrapped_key\": \"" +
                                      hex(testkdf::wrap_pad(transport_, c)) +
                                      "\"}\n{\"identity\": \"sip:d@ims.example.net\"}\n");
  result = cli({"subscriber", "import", "--file", lines_file, "--format", "json"});
  EXPECT_EQ(result.exit_code, 12) << result.err;
  EXPECT_NE(result.err.find("line 2: missing string field \"wrapped_key\""), std::string::npos)
      << result.err;
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:c@ims.example.net", c));

  const auto objects = token_objects();
  const auto database = database_snapshot();
  expect_failure(cli({"subscriber", "import", "--file", csv_file, "--format", "xml"}), 2,
                 "unknown bulk format \"xml\"", objects, database);
}

// The PIN from the environment variable --pin-env names (never from the command line).
TEST_P(CommandsTest, PinFromTheEnvironmentVariableNamedByPinEnv) {
  init();
  std::vector<std::string> argv = base_args_without("--pin-file");
  argv.insert(argv.end(), {"--pin-env", "KMS_TEST_OPERATOR_PIN", "status"});
  auto environment = token_->environment();
  const std::string pin = clitest::read_file(token_->pin_file());
  environment["KMS_TEST_OPERATOR_PIN"] = pin.substr(0, pin.find('\n'));
  auto result = testsupport::run_command(argv, environment);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("key      kms/master"), std::string::npos) << result.out;

  const auto objects = token_objects();
  const auto database = database_snapshot();
  environment["KMS_TEST_OPERATOR_PIN"] = "0000000000";
  expect_failure(testsupport::run_command(argv, environment), 8, "CKR_PIN_INCORRECT", objects,
                 database);
  environment["KMS_TEST_OPERATOR_PIN"] = "";  // set but empty: no PIN
  expect_failure(testsupport::run_command(argv, environment), 3,
                 "environment variable KMS_TEST_OPERATOR_PIN is not set", objects, database);
  environment.erase("KMS_TEST_OPERATOR_PIN");
  argv = base_args_without("--pin-file");
  argv.insert(argv.end(), {"--pin-env", "KMS_TEST_PIN_NOBODY_SET", "status"});
  expect_failure(testsupport::run_command(argv, environment), 3,
                 "environment variable KMS_TEST_PIN_NOBODY_SET is not set", objects, database);

  // The option beats the configuration file's pin_file (command line over file).
  const std::string wrong_pin = dir_->path() + "/wrong.pin";
  clitest::write_file(wrong_pin, "0000000000\n");
  const std::string config = dir_->path() + "/kms.toml";
  clitest::write_file(config, "[token]\npin_file = \"" + wrong_pin + "\"\n");
  argv = base_args_without("--pin-file");
  argv.insert(argv.end(), {"--config", config, "--pin-env", "KMS_TEST_OPERATOR_PIN", "status"});
  environment["KMS_TEST_OPERATOR_PIN"] = pin.substr(0, pin.find('\n'));
  result = testsupport::run_command(argv, environment);
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

// rotate puts the new key where --key-store says: wrapped -> token -> wrapped. After each
// rotation the identity resolves to the new key only, and no old token object is left.
TEST_P(CommandsTest, RotateMovesAnIdentityBetweenStorageModes) {
  init();
  const std::string id = "sip:mover@ims.example.net";
  const Bytes v1 = import("subscriber", id);
  EXPECT_EQ(token_objects(), kKmsKeys);

  const Bytes v2 = testkdf::random_bytes(32);
  auto result = cli({"--key-store", "token", "subscriber", "rotate", id, "--wrapped-hex",
                     hex(testkdf::wrap_pad(transport_, v2))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(token_objects(), kms_keys_and({"kms/subscriber/" + id + "/v2"}));
  {
    auto record = tokens::KeyDatabase(database_).find(IdentityKind::subscriber, id);
    ASSERT_TRUE(record);
    EXPECT_EQ(record->mode, tokens::KeyStoreMode::token);
    EXPECT_EQ(record->key_version, 2u);
    EXPECT_TRUE(record->wrapped_key.empty());
    auto token = open_token();
    tokens::KeyDatabase db(database_);
    tokens::KeyStore store(*token, db, 4);
    const auto key = resolve(store, id);
    EXPECT_EQ(key.key_version, 2u);
    EXPECT_TRUE(testkdf::key_holds(*token, key.handle(), v2));
    EXPECT_FALSE(testkdf::key_holds(*token, key.handle(), v1));
  }

  const std::string out = dir_->path() + "/mover.v3";
  result = cli({"--key-store", "wrapped", "subscriber", "rotate", id, "--insecure-plaintext-export",
                "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Bytes v3 = clitest::exported_key(out);
  EXPECT_EQ(token_objects(), kKmsKeys);  // the v2 token object is destroyed
  {
    auto record = tokens::KeyDatabase(database_).find(IdentityKind::subscriber, id);
    ASSERT_TRUE(record);
    EXPECT_EQ(record->mode, tokens::KeyStoreMode::wrapped);
    EXPECT_EQ(record->key_version, 3u);
    EXPECT_EQ(record->wrapped_key.size(), 40u);
    auto token = open_token();
    tokens::KeyDatabase db(database_);
    tokens::KeyStore store(*token, db, 4);
    const auto key = resolve(store, id);
    EXPECT_EQ(key.key_version, 3u);
    EXPECT_TRUE(testkdf::key_holds(*token, key.handle(), v3));
    EXPECT_FALSE(testkdf::key_holds(*token, key.handle(), v2));
    EXPECT_FALSE(testkdf::key_holds(*token, key.handle(), v1));
  }
  result = cli({"--json", "subscriber", "show", id});
  const auto shown = boost::json::parse(result.out).as_object();
  EXPECT_EQ(shown.at("store").as_string(), "wrapped");
  EXPECT_EQ(shown.at("key_version").as_int64(), 3);
}

// Exit code 5 beyond duplicates: a KMS key with unexpected attributes, and a token-mode
// label that is already taken.
TEST_P(CommandsTest, ExitFiveForUnexpectedAttributesAndATakenLabel) {
  create_database();
  // A token whose kms/master can wrap and unwrap but not derive (and, on NSS, is not
  // extractable-with-trusted as its profile's master key must be).
  generate_token_key(tokens::templates::storage_key(open_token()->profile())
                         .set_string(CKA_LABEL, "kms/master")
                         .set_bytes(CKA_ID, testkdf::to_bytes("kms/master")));
  auto objects = token_objects();
  auto database = database_snapshot();
  const std::string problems = GetParam() == testsupport::TokenKind::nss
                                   ? "extractability, derive, wrap, unwrap"
                                   : "derive, wrap, unwrap";
  expect_failure(
      cli({"init"}), 5,
      "kms/master exists with unexpected attributes (" + problems + "); use --force to replace it",
      objects, database);
  // --force replaces it (and creates the other two).
  auto result = cli({"init", "--force", "--transport-key-file", transport_file_});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(token_objects(), kKmsKeys);
  EXPECT_EQ(cli({"init"}).exit_code, 0);

  const std::string id = "sip:taken@ims.example.net";
  generate_token_key(
      tokens::templates::root_key(open_token()->profile(), IdentityKind::subscriber, id, 1, true));
  objects = token_objects();
  database = database_snapshot();
  expect_failure(cli({"--key-store", "token", "subscriber", "import", id, "--wrapped-hex",
                      random_wrapped_hex()}),
                 5, "the token already holds a key labelled kms/subscriber/" + id + "/v1", objects,
                 database);
}

// Exit code 13: the database cannot be opened or written.
TEST_P(CommandsTest, ExitThirteenForADatabaseThatCannotBeUsed) {
  init();
  import("subscriber", "sip:a@ims.example.net");
  const auto objects = token_objects();
  const std::string not_a_database = dir_->path() + "/garbage.db";
  const std::string garbage(4096, 'x');
  clitest::write_file(not_a_database, garbage);
  std::vector<std::string> argv = base_args_without("--database");
  argv.insert(argv.end(), {"--database", not_a_database, "subscriber", "import",
                           "sip:b@ims.example.net", "--wrapped-hex", random_wrapped_hex()});
  auto result = testsupport::run_command(argv, token_->environment());
  EXPECT_EQ(result.exit_code, 13) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("database " + not_a_database), std::string::npos) << result.err;
  EXPECT_EQ(clitest::read_file(not_a_database), garbage);
  EXPECT_EQ(token_objects(), objects);

  argv = base_args_without("--database");
  argv.insert(argv.end(),
              {"--database", dir_->path() + "/no/such/folder/kms.db", "subscriber", "list"});
  result = testsupport::run_command(argv, token_->environment());
  EXPECT_EQ(result.exit_code, 13) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("cannot open"), std::string::npos) << result.err;
  EXPECT_FALSE(std::filesystem::exists(dir_->path() + "/no"));
}

// Exit code 14: a token state kms-provision cannot act on, here two keys with one label.
TEST_P(CommandsTest, ExitFourteenForAmbiguousTokenKeys) {
  init();
  create_database();
  const auto database = database_snapshot();
  const tokens::TokenProfile profile = open_token()->profile();
  hsm::AttributeTemplate second = tokens::templates::personalisation_key(profile, "twice");
  second.set_bytes(CKA_ID, testkdf::to_bytes("another id"));
  generate_token_key(tokens::templates::personalisation_key(profile, "twice"));
  generate_token_key(std::move(second));
  auto objects = token_objects();
  const std::string out = dir_->path() + "/x.wrapped";
  expect_failure(cli({"subscriber", "add", "sip:n@ims.example.net", "--personalisation-key",
                      "twice", "--out", out}),
                 14, "the token holds 2 keys labelled kms/personalisation/twice; expected one",
                 objects, database);
  EXPECT_FALSE(std::filesystem::exists(out));

  hsm::AttributeTemplate master = tokens::templates::master_key(open_token()->profile());
  master.set_bytes(CKA_ID, testkdf::to_bytes("kms/master 2"));
  generate_token_key(std::move(master));
  objects = token_objects();
  expect_failure(cli({"init"}), 14,
                 "the token holds 2 keys labelled kms/master (use --force to replace them)",
                 objects, database);
}

// Exit code 1: an unexpected failure, here the process running out of memory (a sparse
// bulk file far larger than the address space it may use).
TEST_P(CommandsTest, ExitOneForAnUnexpectedFailure) {
  if (testsupport::kAddressSanitizer) {
    // ASan reserves terabytes of shadow memory at start, so no process of its build runs
    // under an address-space limit, and its operator new aborts rather than throw.
    GTEST_SKIP() << "the failure is injected by ulimit -v; the normal build runs this test";
  }
  init();
  const std::string huge = dir_->path() + "/huge.csv";
  clitest::write_file(huge, "");
  std::filesystem::resize_file(huge, std::uintmax_t{1} << 30);  // 1 GiB of holes
  const auto objects = token_objects();
  const auto database = database_snapshot();
  std::vector<std::string> argv = base_args();
  argv.insert(argv.end(), {"subscriber", "import", "--file", huge});
  std::string command = "ulimit -v 131072 && exec";  // 128 MiB of address space
  for (const auto& word : argv) command += " " + shell_quote(word);
  expect_failure(testsupport::run_command({"/bin/sh", "-c", command}, token_->environment()), 1,
                 "kms-provision: error: ", objects, database);
}

INSTANTIATE_TEST_SUITE_P(Tokens, CommandsTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         clitest::kind_param_name);

}  // namespace
