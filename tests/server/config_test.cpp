// kmsd's TOML configuration: the example validates, every problem is named, and
// `kmsd --check-config` explains and exits non-zero.
#include "kms/server/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_token.h"

namespace {

namespace fs = std::filesystem;
using kms::server::load_config;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testsupport::TempDir>("kmsd-config");
    fs::create_directories(path("pki"));
    fs::create_directories(path("token"));
    // Real PEM files: the checker parses them.
    const auto result = testsupport::run_command(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=test", "-keyout", path("pki/server.key"), "-out",
         path("pki/server.crt")});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    fs::copy_file(path("pki/server.crt"), path("pki/bridge-ca.crt"));
    testsupport::write_private_file(path("token/user.pin"), "1234\n");
  }
  std::string path(const std::string& name) const { return dir_->path() + "/" + name; }
  std::string write(const std::string& text) const {
    std::ofstream(path("kmsd.toml")) << text;
    return path("kmsd.toml");
  }
  static std::string example() {
    std::ifstream in(KMS_EXAMPLE_CONFIG);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static std::string joined(const std::vector<std::string>& problems) {
    std::string out;
    for (const auto& p : problems) out += p + "\n";
    return out;
  }
  std::unique_ptr<testsupport::TempDir> dir_;
};

TEST_F(ConfigTest, ExampleConfigurationIsValidAndResolvesPathsAgainstItsFolder) {
  const auto loaded = load_config(write(example()));
  ASSERT_TRUE(loaded.ok()) << joined(loaded.problems);
  const auto& c = loaded.config;
  EXPECT_EQ(c.server.listen_address, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8443);
  EXPECT_EQ(c.server.tls_cert, fs::path(path("pki/server.crt")));
  EXPECT_EQ(c.audit.path, fs::path(path("audit.log")));
  EXPECT_EQ(c.token.database, path("kms.db"));
  EXPECT_EQ(c.limits.max_body_bytes, 16384u);
  EXPECT_EQ(c.protocol.freshness_window.count(), 300);
}

TEST_F(ConfigTest, EveryProblemIsNamed) {
  std::string text = example();
  const auto replace = [&text](const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  };
  replace("listen = \"127.0.0.1:8443\"", "listen = \"localhost\"");
  replace("tls_min_version = \"1.3\"", "tls_min_version = \"1.1\"");
  replace("max_connections = 1024", "max_connections = -5");
  replace("level = \"info\"", "level = \"loud\"");
  text += "\n[server2]\nx = 1\n";
  replace("[limits]\n", "[limits]\nmax_bodybytes = 10\n");
  const auto loaded = load_config(write(text));
  const std::string problems = joined(loaded.problems);
  EXPECT_NE(problems.find("server.listen"), std::string::npos) << problems;
  EXPECT_NE(problems.find("server.tls_min_version"), std::string::npos) << problems;
  EXPECT_NE(problems.find("limits.max_connections"), std::string::npos) << problems;
  EXPECT_NE(problems.find("log.level"), std::string::npos) << problems;
  EXPECT_NE(problems.find("server2"), std::string::npos) << problems;
  EXPECT_NE(problems.find("max_bodybytes"), std::string::npos) << problems;
}

TEST_F(ConfigTest, MissingFilesAndSyntaxErrorsAreExplained) {
  fs::remove(path("pki/server.key"));
  auto loaded = load_config(write(example()));
  EXPECT_NE(joined(loaded.problems).find("server.tls_key"), std::string::npos);
  loaded = load_config(write("[server\nlisten ="));
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.problems[0].find("TOML syntax error"), std::string::npos);
}

TEST_F(ConfigTest, CheckConfigCommandExplainsAndFails) {
  auto result = testsupport::run_command({KMSD_BIN, "--check-config", write(example())});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("configuration OK"), std::string::npos) << result.out;
  std::string text = example();
  text.replace(text.find("max_body_bytes = 16384"), 22, "max_body_bytes = \"big\"");
  result = testsupport::run_command({KMSD_BIN, "--check-config", write(text)});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("limits.max_body_bytes must be an integer"), std::string::npos)
      << result.err;
}

}  // namespace
