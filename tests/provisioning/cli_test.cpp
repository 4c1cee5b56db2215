// kms-provision end to end on SoftHSM and NSS softoken: the real binary, a real token, a
// real SQLite file; results checked in the token from this process.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/json.hpp>
#include <map>
#include <sstream>

#include "cli_fixture.h"
#include "hsm/error.h"
#include "key_proof.h"
#include "tokens/key_store.h"

namespace {

using clitest::Bytes;
using clitest::CliTest;
using clitest::hex;
using tokens::IdentityKind;

const std::vector<std::string> kKmsKeys = {"kms/master", "kms/storage", "kms/transport"};

// The token's labels after kms-provision init plus one more object.
std::vector<std::string> kms_keys_and(const std::string& label) {
  std::vector<std::string> labels = kKmsKeys;
  labels.push_back(label);
  std::sort(labels.begin(), labels.end());
  return labels;
}

TEST_P(CliTest, InitCreatesTheKmsKeysAndIsIdempotent) {
  auto result = cli({"--json", "init", "--transport-key-file", transport_file_});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto json = boost::json::parse(result.out).as_object();
  EXPECT_EQ(json["created"].as_array().size(), 3u);
  EXPECT_EQ(json["profile"].as_string(), token_->profile_name());
  EXPECT_TRUE(json["transport_key_imported"].as_bool());
  EXPECT_EQ(token_objects(), kKmsKeys);

  result = cli({"init"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("already initialised"), std::string::npos) << result.out;
  EXPECT_EQ(token_objects(), kKmsKeys);

  result = cli({"status"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("kms/storage sensitive wrap unwrap\n"), std::string::npos)
      << result.out;
  EXPECT_EQ(result.out.find("MODIFIABLE"), std::string::npos) << result.out;
  result = cli({"--json", "status"});
  const boost::json::value status = boost::json::parse(result.out);
  for (const auto& key : status.at("keys").as_array()) {
    EXPECT_FALSE(key.as_object().at("modifiable").as_bool()) << key;
  }
}

// A KMS key made before key custody (modifiable) is accepted by init, which must not
// replace the storage key the database depends on, and shown by status.
TEST_P(CliTest, StatusShowsAModifiableKmsKey) {
  hsm::AttributeTemplate old_storage = tokens::templates::storage_key(open_token()->profile());
  old_storage.set_bool(CKA_MODIFIABLE, true);
  generate_token_key(std::move(old_storage));
  auto result = cli({"init", "--transport-key-file", transport_file_});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  result = cli({"status"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("kms/storage sensitive wrap unwrap MODIFIABLE\n"), std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("kms/master sensitive"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("kms/master sensitive derive MODIFIABLE"), std::string::npos);
}

// kms.db is created 0600 whatever the umask; an existing one group or others may read is
// used with a one-line warning on stderr naming it and its mode.
TEST_P(CliTest, DatabaseIsCreatedOwnerOnlyAndAnOpenOneIsReported) {
  init();
  const mode_t previous = ::umask(0);
  auto result = cli(
      {"subscriber", "import", "sip:alice@ims.example.net", "--wrapped-hex", random_wrapped_hex()});
  ::umask(previous);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err, "");
  EXPECT_EQ(testsupport::file_mode(database_), 0600);
  ASSERT_EQ(::chmod(database_.c_str(), 0644), 0);
  result = cli({"subscriber", "list"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("kms-provision: WARNING: database file " + database_ +
                            " has mode 0644: group or others may read or write it"),
            std::string::npos)
      << result.err;
  EXPECT_NE(result.out.find("sip:alice@ims.example.net"), std::string::npos) << result.out;
}

// init --force replaces M, the storage key and the transport key (docs/OPERATIONS.md):
// what M derives changes, root keys stored wrapped under the old storage key no longer
// unwrap, keys wrapped under the old transport key no longer import; token objects
// (token-mode root keys, personalisation keys) are not KMS keys and keep working.
TEST_P(CliTest, InitForceReplacesTheKeys) {
  init();  // the transport key from the ceremony file: created, not generated
  const Bytes context = testkdf::to_bytes("init --force test");
  const Bytes derived_before = master_derived("media-chair", context);
  ASSERT_EQ(derived_before.size(), 32u);
  ASSERT_EQ(master_derived("media-chair", context), derived_before);  // same inputs, same key
  // CKA_LOCAL: generated in the token, or created from a known value. NSS softoken does not
  // set it on generated secret keys, so only SoftHSM shows the difference.
  const bool local_flag = GetParam() == testsupport::TokenKind::softhsm;
  if (local_flag) {
    EXPECT_FALSE(object_flag("kms/transport", CKA_LOCAL));
    EXPECT_TRUE(object_flag("kms/master", CKA_LOCAL));
  }

  const std::string wrapped_id = "sip:wrapped@ims.example.net";
  const std::string token_id = "sip:token@ims.example.net";
  const Bytes wrapped_key = testkdf::random_bytes(32), token_key = testkdf::random_bytes(32);
  auto result = cli({"subscriber", "import", wrapped_id, "--wrapped-hex",
                     hex(testkdf::wrap_pad(transport_, wrapped_key))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  result = cli({"--key-store", "token", "subscriber", "import", token_id, "--wrapped-hex",
                hex(testkdf::wrap_pad(transport_, token_key))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Bytes personalisation = personalisation_key("factory1");
  ASSERT_TRUE(stored_key_holds(IdentityKind::subscriber, wrapped_id, wrapped_key));
  const auto objects = token_objects();

  result = cli({"--json", "init", "--force"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto json = boost::json::parse(result.out).as_object();
  EXPECT_EQ(json["replaced"].as_array().size(), 3u);
  EXPECT_FALSE(json["transport_key_imported"].as_bool());
  EXPECT_EQ(token_objects(), objects);  // one object per label, the temporary names gone
  for (const std::string& label : kKmsKeys) {
    EXPECT_EQ(object_id(label), Bytes(label.begin(), label.end())) << label;
  }

  // A new M: the same derivation gives another key.
  const Bytes derived_after = master_derived("media-chair", context);
  EXPECT_NE(derived_after, derived_before);
  EXPECT_EQ(master_derived("media-chair", context), derived_after);
  // A new transport key, generated in the token this time, so the ceremony key is gone.
  if (local_flag) {
    EXPECT_TRUE(object_flag("kms/transport", CKA_LOCAL));
  }
  result = cli({"subscriber", "import", "sip:late@ims.example.net", "--wrapped-hex",
                hex(testkdf::wrap_pad(transport_, testkdf::random_bytes(32)))});
  EXPECT_EQ(result.exit_code, 11) << result.err;
  EXPECT_NE(result.err.find("does not unwrap under the transport key"), std::string::npos)
      << result.err;
  // A new storage key: the record stored under the old one no longer unwraps.
  {
    auto token = open_token();
    tokens::KeyDatabase db(database_);
    tokens::KeyStore store(*token, db, 4);
    EXPECT_THROW(store.resolve(IdentityKind::subscriber, wrapped_id), hsm::Error);
  }
  // Token objects are untouched.
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, token_id, token_key));
  const std::string out = dir_->path() + "/new.wrapped";
  result = cli({"subscriber", "add", "sip:new@ims.example.net", "--personalisation-key", "factory1",
                "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:new@ims.example.net",
                               testkdf::unwrap_pad(personalisation, clitest::exported_key(out))));
  // The documented remedy: provision the wrapped-mode identity again (rotate).
  const Bytes v2 = testkdf::random_bytes(32);
  const Bytes transport2 = testkdf::random_bytes(32);
  const std::string transport2_file = dir_->path() + "/transport2.key";
  clitest::write_file(transport2_file, hex(transport2) + "\n");
  result = cli({"init", "--force", "--transport-key-file", transport2_file});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  if (local_flag) {
    EXPECT_FALSE(object_flag("kms/transport", CKA_LOCAL));
  }
  result = cli({"subscriber", "rotate", wrapped_id, "--wrapped-hex",
                hex(testkdf::wrap_pad(transport2, v2))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, wrapped_id, v2));
  EXPECT_NE(master_derived("media-chair", context), derived_after);
}

TEST_P(CliTest, AddExportsTheKeyUnderThePersonalisationKey) {
  init();
  const Bytes personalisation = personalisation_key("factory1");
  const std::string out = dir_->path() + "/alice.wrapped";
  auto result = cli({"subscriber", "add", "sip:alice@ims.example.net", "--personalisation-key",
                     "factory1", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err, "");
  EXPECT_EQ(std::filesystem::status(out).permissions() & std::filesystem::perms::group_read,
            std::filesystem::perms::none);
  const Bytes alice = testkdf::unwrap_pad(personalisation, clitest::exported_key(out));
  ASSERT_EQ(alice.size(), 32u);

  // Wrapped mode: the token holds only the KMS's own keys.
  EXPECT_EQ(token_objects(), kms_keys_and("kms/personalisation/factory1"));
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:alice@ims.example.net", alice));

  result = cli({"personalisation-key", "list"});
  EXPECT_EQ(result.out, "factory1\n");
}

TEST_P(CliTest, PlaintextExportOnlyWithTheInsecureFlagAndAWarning) {
  init();
  const std::string out = dir_->path() + "/bridge.key";
  auto result = cli({"bridge", "add", "sip:bridge1@conf.ims.example.net",
                     "--insecure-plaintext-export", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("WARNING"), std::string::npos);
  const Bytes bridge = clitest::exported_key(out);
  ASSERT_EQ(bridge.size(), 32u);
  EXPECT_TRUE(stored_key_holds(IdentityKind::bridge, "sip:bridge1@conf.ims.example.net", bridge));

  result = cli({"--json", "bridge", "list"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto list = boost::json::parse(result.out).as_array();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].as_object()["identity"].as_string(), "sip:bridge1@conf.ims.example.net");
  result = cli({"bridge", "revoke", "sip:bridge1@conf.ims.example.net"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  result = cli({"bridge", "list", "--status", "revoked"});
  EXPECT_NE(result.out.find("sip:bridge1@conf.ims.example.net  revoked"), std::string::npos);
}

// docs/OPERATIONS.md "Root key export files", format 2: the descriptive comment line, then
// `# name: value` header fields (format, identity, kind, key_version, profile, wrapping),
// then the key in hex, the only line that is not a comment (so format 1 readers still
// read the key).
std::map<std::string, std::string> export_header(const std::string& path) {
  std::map<std::string, std::string> fields;
  std::istringstream in(clitest::read_file(path));
  int key_lines = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '#') {
      ++key_lines;
      continue;
    }
    const auto colon = line.find(": ");
    if (line.rfind("# ", 0) == 0 && colon != std::string::npos && line.find(' ', 2) > colon) {
      fields[line.substr(2, colon - 2)] = line.substr(colon + 2);
    }
  }
  EXPECT_EQ(key_lines, 1) << path;
  return fields;
}

TEST_P(CliTest, ExportFilesCarryIdentityKindKeyVersionAndProfile) {
  init();
  personalisation_key("factory1");
  const std::string profile = token_->profile_name();
  const std::string alice = dir_->path() + "/alice.wrapped";
  auto result = cli({"subscriber", "add", "sip:alice@ims.example.net", "--personalisation-key",
                     "factory1", "--out", alice});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(export_header(alice),
            (std::map<std::string, std::string>{{"format", "2"},
                                                {"identity", "sip:alice@ims.example.net"},
                                                {"kind", "subscriber"},
                                                {"key_version", "1"},
                                                {"profile", profile},
                                                {"wrapping", "personalisation-key factory1"}}));
  EXPECT_EQ(clitest::read_file(alice).rfind(
                "# root key of sip:alice@ims.example.net, RFC 5649-wrapped under personalisation "
                "key factory1 (hex)\n",
                0),
            0u);

  const std::string bridge_v1 = dir_->path() + "/bridge.v1";
  result = cli({"bridge", "add", "sip:bridge1@conf.ims.example.net", "--insecure-plaintext-export",
                "--out", bridge_v1});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::map<std::string, std::string> expected = {
      {"format", "2"},      {"identity", "sip:bridge1@conf.ims.example.net"},
      {"kind", "bridge"},   {"key_version", "1"},
      {"profile", profile}, {"wrapping", "none"}};
  EXPECT_EQ(export_header(bridge_v1), expected);
  // A rotation's export names the new version, for both kinds and both exports.
  const std::string bridge_v2 = dir_->path() + "/bridge.v2";
  result = cli({"bridge", "rotate", "sip:bridge1@conf.ims.example.net",
                "--insecure-plaintext-export", "--out", bridge_v2});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  expected["key_version"] = "2";
  EXPECT_EQ(export_header(bridge_v2), expected);
  EXPECT_NE(clitest::exported_key(bridge_v1), clitest::exported_key(bridge_v2));
  const std::string alice_v2 = dir_->path() + "/alice.v2";
  result = cli({"subscriber", "rotate", "sip:alice@ims.example.net", "--personalisation-key",
                "factory1", "--out", alice_v2});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(export_header(alice_v2).at("key_version"), "2");
  EXPECT_EQ(export_header(alice_v2).at("wrapping"), "personalisation-key factory1");
}

TEST_P(CliTest, ImportShowRevokeRotate) {
  init();
  const Bytes v1 = testkdf::random_bytes(32);
  const std::string wrapped_file = dir_->path() + "/bob.wrapped";
  clitest::write_file(wrapped_file, hex(testkdf::wrap_pad(transport_, v1)) + "\n");
  auto result = cli({"subscriber", "import", "tel:+12015550123", "--wrapped", wrapped_file});
  ASSERT_EQ(result.exit_code, 0) << result.err;

  result = cli({"--json", "subscriber", "show", "tel:+12015550123"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto shown = boost::json::parse(result.out).as_object();
  EXPECT_EQ(shown["status"].as_string(), "active");
  EXPECT_EQ(shown["key_version"].as_int64(), 1);
  EXPECT_EQ(shown["store"].as_string(), "wrapped");

  // Rotate to an imported v2.
  const Bytes v2 = testkdf::random_bytes(32);
  result = cli({"subscriber", "rotate", "tel:+12015550123", "--wrapped-hex",
                hex(testkdf::wrap_pad(transport_, v2))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  {
    auto context = open_token();
    tokens::KeyDatabase db(database_);
    tokens::KeyStore store(*context, db, 4);
    const auto key = store.resolve(IdentityKind::subscriber, "tel:+12015550123");
    EXPECT_EQ(key.key_version, 2u);
    EXPECT_TRUE(testkdf::key_holds(*context, key.handle(), v2));
    EXPECT_FALSE(testkdf::key_holds(*context, key.handle(), v1));
  }
  result = cli({"subscriber", "revoke", "tel:+12015550123"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  {
    auto context = open_token();
    tokens::KeyDatabase db(database_);
    tokens::KeyStore store(*context, db, 4);
    EXPECT_THROW(store.resolve(IdentityKind::subscriber, "tel:+12015550123"), tokens::LookupError);
  }
  // Rotating with a generated key re-activates it as v3.
  const std::string out = dir_->path() + "/bob.v3";
  result = cli(
      {"subscriber", "rotate", "tel:+12015550123", "--insecure-plaintext-export", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  result = cli({"--json", "subscriber", "show", "tel:+12015550123"});
  shown = boost::json::parse(result.out).as_object();
  EXPECT_EQ(shown["key_version"].as_int64(), 3);
  EXPECT_EQ(shown["status"].as_string(), "active");
}

TEST_P(CliTest, TokenModeKeepsTheKeyAsATokenObject) {
  init();
  const Bytes key = testkdf::random_bytes(32);
  auto result = cli({"--key-store", "token", "subscriber", "import", "sip:tm@ims.example.net",
                     "--wrapped-hex", hex(testkdf::wrap_pad(transport_, key))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(token_objects(), kms_keys_and("kms/subscriber/sip:tm@ims.example.net/v1"));
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:tm@ims.example.net", key));
  // Rotation: a new token object v2, the old one destroyed.
  const Bytes v2 = testkdf::random_bytes(32);
  result = cli({"--key-store", "token", "subscriber", "rotate", "sip:tm@ims.example.net",
                "--wrapped-hex", hex(testkdf::wrap_pad(transport_, v2))});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(token_objects(), kms_keys_and("kms/subscriber/sip:tm@ims.example.net/v2"));
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:tm@ims.example.net", v2));
  result = cli({"subscriber", "revoke", "sip:tm@ims.example.net"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(token_objects(), kKmsKeys);  // revoked: the token object is gone
}

TEST_P(CliTest, BulkImportReportsBadLinesAndKeepsTheGoodOnes) {
  init();
  const Bytes a = testkdf::random_bytes(32), b = testkdf::random_bytes(32);
  const Bytes other_kek = testkdf::random_bytes(32);
  std::string csv = "identity,wrapped_key\n";
  csv += "sip:a@ims.example.net," + hex(testkdf::wrap_pad(transport_, a)) + "\n";          // line 2
  csv += "not-an-identity," + hex(testkdf::wrap_pad(transport_, a)) + "\n";                // line 3
  csv += "sip:c@ims.example.net,zz-not-hex!\n";                                            // line 4
  csv += "sip:d@ims.example.net," + hex(testkdf::wrap_pad(other_kek, a)) + "\n";           // line 5
  csv += "# a comment\n";                                                                  // line 6
  csv += "sip:a@ims.example.net," + hex(testkdf::wrap_pad(transport_, b)) + "\n";          // line 7
  csv += "sip:e@ims.example.net\n";                                                        // line 8
  csv += "sip:f@ims.example.net," + random_wrapped_hex(16) + "\n";                         // line 9
  csv += "\"sip:b@ims.example.net\",\"" + hex(testkdf::wrap_pad(transport_, b)) + "\"\n";  // 10
  const std::string file = dir_->path() + "/keys.csv";
  clitest::write_file(file, csv);
  auto result = cli({"subscriber", "import", "--file", file, "--batch-size", "2"});
  EXPECT_EQ(result.exit_code, 12) << result.err;
  for (const char* line :
       {"line 3: ", "line 4: ", "line 5: ", "line 7: ", "line 8: ", "line 9: "}) {
    EXPECT_NE(result.err.find(line), std::string::npos) << line << " missing in " << result.err;
  }
  EXPECT_EQ(result.err.find("line 2: "), std::string::npos);
  EXPECT_EQ(result.err.find("line 10: "), std::string::npos);
  EXPECT_NE(result.out.find("imported 2 subscribers, 6 failed"), std::string::npos) << result.out;

  EXPECT_EQ(tokens::KeyDatabase(database_).count(IdentityKind::subscriber), 2u);
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:a@ims.example.net", a));
  EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, "sip:b@ims.example.net", b));
}

TEST_P(CliTest, BulkImportFromJson) {
  init();
  const Bytes a = testkdf::random_bytes(32);
  const std::string file = dir_->path() + "/keys.json";
  clitest::write_file(file, "[{\"identity\": \"sips:j@ims.example.net\", \"wrapped_key\": \"" +
                                hex(testkdf::wrap_pad(transport_, a)) +
                                "\"}, {\"identity\": \"sip:k@ims.example.net\"}]");
  auto result = cli({"--json", "bridge", "import", "--file", file});
  EXPECT_EQ(result.exit_code, 12) << result.err;
  auto json = boost::json::parse(result.out).as_object();
  EXPECT_EQ(json["imported"].as_int64(), 1);
  EXPECT_EQ(json["failed"].as_array()[0].as_object()["entry"].as_int64(), 2);
  EXPECT_NE(result.err.find("entry 2: missing string field \"wrapped_key\""), std::string::npos)
      << result.err;
}

// The shared TOML file (kmsd's) names the token and the database; relative paths are
// relative to the file. KMS_* environment variables are the defaults beneath it.
TEST_P(CliTest, ConfigFileAndEnvironmentDefaults) {
  const hsm::ModuleConfig module = token_->module_config();
  std::filesystem::create_directories(dir_->path() + "/etc");
  std::filesystem::copy_file(token_->pin_file(), dir_->path() + "/etc/user.pin");
  std::string toml = "[server]\nlisten = \"127.0.0.1:0\"\n\n[token]\nmodule = \"" + module.module +
                     "\"\nuri = \"" + token_->uri() + "\"\npin_file = \"user.pin\"\n";
  if (module.init_reserved) {
    toml += "init_reserved = \"" + *module.init_reserved + "\"\n";
  }
  toml += "\n[database]\npath = \"kms.db\"\n";
  const std::string config = dir_->path() + "/etc/kms.toml";
  clitest::write_file(config, toml);
  auto result = testsupport::run_command({KMS_PROVISION_PATH, "--config", config, "init"},
                                         token_->environment());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  result = testsupport::run_command(
      {KMS_PROVISION_PATH, "--config", config, "subscriber", "add", "sip:cfg@ims.example.net",
       "--insecure-plaintext-export", "--out", dir_->path() + "/cfg.key"},
      token_->environment());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(std::filesystem::exists(dir_->path() + "/etc/kms.db"));

  // Environment only: no file, no options; the PIN from a variable named by KMS_PIN_ENV.
  std::map<std::string, std::string> environment = token_->environment();
  environment["KMS_PKCS11_MODULE"] = module.module;
  if (module.init_reserved) environment["KMS_PKCS11_INIT_RESERVED"] = *module.init_reserved;
  environment["KMS_TOKEN_URI"] = token_->uri();
  environment["KMS_PIN_ENV"] = "TEST_KMS_USER_PIN";
  const std::string pin = clitest::read_file(token_->pin_file());
  environment["TEST_KMS_USER_PIN"] = pin.substr(0, pin.find('\n'));
  environment["KMS_DATABASE"] = dir_->path() + "/etc/kms.db";
  result = testsupport::run_command(
      {KMS_PROVISION_PATH, "subscriber", "show", "sip:cfg@ims.example.net"}, environment);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  result = testsupport::run_command({KMS_PROVISION_PATH, "status"}, environment);
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

TEST_P(CliTest, EveryCommandHasHelp) {
  for (const std::vector<std::string>& command : {std::vector<std::string>{"--help"},
                                                  {"init", "--help"},
                                                  {"status", "--help"},
                                                  {"personalisation-key", "import", "--help"},
                                                  {"subscriber", "add", "--help"},
                                                  {"subscriber", "import", "--help"},
                                                  {"subscriber", "list", "--help"},
                                                  {"subscriber", "show", "--help"},
                                                  {"subscriber", "revoke", "--help"},
                                                  {"subscriber", "rotate", "--help"},
                                                  {"bridge", "add", "--help"},
                                                  {"bridge", "list", "--help"},
                                                  {"bridge", "show", "--help"},
                                                  {"bridge", "revoke", "--help"}}) {
    const auto result = cli_raw(command);
    EXPECT_EQ(result.exit_code, 0) << command[0];
    EXPECT_NE(result.out.find("Usage"), std::string::npos) << command[0];
  }
}

INSTANTIATE_TEST_SUITE_P(Tokens, CliTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         clitest::kind_param_name);

}  // namespace
