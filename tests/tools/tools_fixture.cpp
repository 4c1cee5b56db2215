#include "tools_fixture.h"

#include <filesystem>
#include <memory>

namespace toolstest {
namespace {

std::unique_ptr<kmstest::KmsdEnvironment> g_environment;
std::unique_ptr<kmstest::KmsdProcess> g_kmsd;

// Stops kmsd and removes the token when the program's tests are done.
class Teardown : public ::testing::Environment {
 public:
  void TearDown() override {
    g_kmsd.reset();
    g_environment.reset();
  }
};
[[maybe_unused]] ::testing::Environment* const g_teardown =
    ::testing::AddGlobalTestEnvironment(new Teardown);

}  // namespace

kmstest::KmsdEnvironment& environment() {
  if (!g_environment) g_environment = kmstest::KmsdEnvironment::create();
  return *g_environment;
}

kmstest::KmsdProcess& kmsd() {
  if (!g_kmsd) {
    g_kmsd =
        std::make_unique<kmstest::KmsdProcess>(environment(), environment().dir() + "/kmsd.toml");
  }
  return *g_kmsd;
}

testsupport::CommandResult run(std::vector<std::string> argv, bool with_server) {
  if (with_server) {
    argv.insert(argv.end(), {"--server", kmsd().url(), "--ca", environment().pki().server_ca});
  }
  return testsupport::run_command(argv);
}

Invitation invite(const std::string& dir, const std::string& chair, const std::string& invitee,
                  const std::vector<std::string>& extra) {
  const std::string name = invitee.substr(4, invitee.find('@') - 4);
  Invitation files{dir + "/chair.state",
                   dir + "/" + name + ".ea",
                   dir + "/" + name + ".relay",
                   dir + "/" + name + ".media",
                   {},
                   {}};
  std::vector<std::string> argv = {KMS_CLIENT_BIN,
                                   "ue",
                                   "invite",
                                   "--id",
                                   chair,
                                   "--key-file",
                                   environment().key_file(chair),
                                   "--state",
                                   files.state,
                                   "--invitee",
                                   invitee,
                                   "--out",
                                   files.envelope,
                                   "--profile",
                                   environment().profile()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  files.invite = run(argv);
  if (files.invite.exit_code != 0) return files;
  argv = {KMS_CLIENT_BIN,
          "ue",
          "request",
          "--id",
          invitee,
          "--key-file",
          environment().key_file(invitee),
          "--chair",
          chair,
          "--chair-envelope",
          files.envelope,
          "--out-relay",
          files.relay,
          "--out-key",
          files.media,
          "--profile",
          environment().profile()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  files.request = run(argv, true);
  return files;
}

std::string test_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string dir = environment().dir() + "/" + info->test_suite_name() + "." + info->name();
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace toolstest
