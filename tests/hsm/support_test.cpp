// tests/support itself: the command runner and the token factory's files.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_token.h"

namespace {

using testsupport::run_command;

TEST(RunCommand, CapturesOutputErrorAndExitCode) {
  const auto result = run_command({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_EQ(result.out, "out\n");
  EXPECT_EQ(result.err, "err\n");
}

TEST(RunCommand, PassesEnvironmentAndStandardInput) {
  const auto env = run_command({"sh", "-c", "printf %s \"$KMS_SUPPORT_TEST\""},
                               {{"KMS_SUPPORT_TEST", "value with spaces"}});
  EXPECT_EQ(env.out, "value with spaces");
  const std::string big(200000, 'x');  // more than a pipe buffer, both ways
  const auto echoed = run_command({"cat"}, {}, big);
  EXPECT_EQ(echoed.exit_code, 0);
  EXPECT_EQ(echoed.out, big);
}

TEST(RunCommand, MissingProgramIsExit127) {
  const auto result = run_command({"/nonexistent/program"});
  EXPECT_EQ(result.exit_code, 127);
  EXPECT_FALSE(result.err.empty());
}

TEST(TestToken, CreatesAndRemovesItsFolder) {
  std::string dir;
  for (auto kind : {testsupport::TokenKind::softhsm, testsupport::TokenKind::nss}) {
    auto token = testsupport::TestToken::create(kind);
    dir = token->dir();
    EXPECT_TRUE(std::filesystem::exists(token->pin_file()));
    EXPECT_EQ(std::filesystem::status(token->pin_file()).permissions() &
                  std::filesystem::perms::others_read,
              std::filesystem::perms::none);
    EXPECT_FALSE(token->user_pin().empty());
    EXPECT_EQ(token->profile_name(),
              kind == testsupport::TokenKind::nss ? "sp800-108-cmac" : "aes-ecb-sha256");
    token.reset();
    EXPECT_FALSE(std::filesystem::exists(dir));
  }
}

}  // namespace
