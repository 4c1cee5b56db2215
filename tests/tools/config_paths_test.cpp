// One configuration file with a relative module path, PIN file and database path, used by
// kms-provision, kmsd and kms-audit from a working directory that is not the file's folder:
// every program resolves them against the file's folder (tokens/token_config.h), so they
// meet on the same token and the same database.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kmsd_fixture.h"
#include "test_token.h"

namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(SharedConfigPaths, RelativeModuleAndDatabaseResolveAlikeInEveryProgram) {
  const auto environment = kmstest::KmsdEnvironment::create();
  testsupport::TestToken& token = environment->token();
  // deployment/etc/kmsd.toml names ../lib, ../secrets and ../state.
  const std::string root = environment->dir() + "/deployment";
  for (const char* folder : {"/etc", "/lib", "/secrets", "/state"}) {
    fs::create_directories(root + folder);
  }
  fs::create_symlink(token.module_path(), root + "/lib/pkcs11-module.so");
  testsupport::write_private_file(root + "/secrets/user.pin", read_all(token.pin_file()));
  const std::string config = root + "/etc/kmsd.toml";
  const kmstest::TestPki& pki = environment->pki();
  std::ofstream(config) << "[server]\nlisten = \"127.0.0.1:0\"\n"
                        << "tls_cert = \"" << pki.server.cert << "\"\n"
                        << "tls_key = \"" << pki.server.key << "\"\n"
                        << "bridge_ca = \"" << pki.bridge_ca << "\"\n"
                        << "worker_threads = 2\nio_threads = 2\n"
                        << "[audit]\npath = \"audit.log\"\n"
                        << "[token]\nmodule = \"../lib/pkcs11-module.so\"\n"
                        << "uri = \"" << token.uri() << "\"\n"
                        << "pin_file = \"../secrets/user.pin\"\n"
                        << "profile = \"" << token.profile_name() << "\"\n"
                        << "[database]\npath = \"../state/kms.db\"\n";
  // What the one rule makes of it: the file's folder joined with the value.
  const std::string database = root + "/etc/../state/kms.db";
  ASSERT_NE(fs::current_path(), fs::path(root + "/etc"));

  // kms-provision: the token through the relative module path, the database under state/.
  const auto provision = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {KMS_PROVISION_BIN, "--config", config});
    return testsupport::run_command(args, token.environment());
  };
  auto result = provision({"init"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  for (const char* identity : {kmstest::kAlice, kmstest::kBob}) {
    result = provision({"subscriber", "add", identity, "--insecure-plaintext-export", "--out",
                        root + "/" + std::string(identity).substr(4, 3) + ".key"});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }
  EXPECT_TRUE(fs::exists(database));
  EXPECT_FALSE(fs::exists(root + "/etc/kms.db"));
  EXPECT_FALSE(fs::exists("kms.db"));

  // kmsd: starts only if it loads the module through the same relative path; serves alice
  // and bob only if it opens the database kms-provision wrote.
  kmstest::KmsdProcess kmsd(*environment, config);
  const std::vector<std::string> chair = {"--id", kmstest::kAlice, "--key-file", root + "/ali.key"};
  std::vector<std::string> invite = {
      KMS_CLIENT_BIN, "ue",    "invite",         "--state",   root + "/chair.state", "--invitee",
      kmstest::kBob,  "--out", root + "/bob.ea", "--profile", token.profile_name()};
  invite.insert(invite.begin() + 3, chair.begin(), chair.end());
  result = testsupport::run_command(invite);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  result = testsupport::run_command({KMS_CLIENT_BIN,
                                     "ue",
                                     "request",
                                     "--id",
                                     kmstest::kBob,
                                     "--key-file",
                                     root + "/bob.key",
                                     "--chair",
                                     kmstest::kAlice,
                                     "--chair-envelope",
                                     root + "/bob.ea",
                                     "--out-relay",
                                     root + "/bob.relay",
                                     "--out-key",
                                     root + "/bob.media",
                                     "--profile",
                                     token.profile_name(),
                                     "--server",
                                     kmsd.url(),
                                     "--ca",
                                     pki.server_ca});
  ASSERT_EQ(result.exit_code, 0) << result.err << "\nkmsd log:\n" << kmsd.log();

  // kms-audit --config: the same database, holding the anchor of kmsd's admission.
  result = testsupport::run_command(
      {KMS_AUDIT_BIN, "verify", root + "/etc/audit.log", "--config", config});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("ok: anchored seq "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("(" + database + ") present and unchanged"), std::string::npos)
      << result.out;
  EXPECT_FALSE(fs::exists(root + "/etc/kms.db"));
}

}  // namespace
