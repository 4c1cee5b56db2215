// What every installed program has in common (docs/OPERATIONS.md "Exit codes of the
// programs"): --version prints "NAME VERSION" (the project version from CMake) and exits 0;
// --help exits 0; a usage error (an unknown option, a missing required argument, a value of
// the wrong type or an argument too many) exits with that program's documented usage code,
// never with one of CLI11's own (105, 106, 109, ...), and says what is wrong on stderr. No
// token, no kmsd: each case fails (or answers) before anything is opened.
#include <gtest/gtest.h>

#include <ostream>
#include <regex>
#include <string>
#include <vector>

#include "test_token.h"

namespace {

struct Program {
  std::string name;
  std::string path;
  int usage_code;                      // docs/OPERATIONS.md
  std::vector<std::string> unknown;    // a valid command with --no-such-option
  std::vector<std::string> missing;    // arguments that leave a required one out
  std::vector<std::string> malformed;  // a value of the wrong type, or an argument too many
};

std::vector<Program> programs() {
  return {
      {"kmsd", KMSD_BIN, 1, {"--no-such-option"}, {"--check-config"}, {"--worker-threads", "many"}},
      {"kms-provision",
       KMS_PROVISION_BIN,
       2,
       {"status", "--no-such-option"},
       {"subscriber", "add"},
       {"subscriber", "import", "--file", "x.csv", "--batch-size", "many"}},
      {"kms-client",
       KMS_CLIENT_BIN,
       2,
       {"health", "--ca", "/dev/null", "--no-such-option"},
       {"ue", "invite", "--id", "sip:alice@ims.example.net"},
       {"health", "--ca", "/dev/null", "--timeout-ms", "soon"}},
      {"kms-audit",
       KMS_AUDIT_BIN,
       2,
       {"verify", "audit.log", "--no-such-option"},
       {"verify"},
       {"verify", "audit.log", "second.log"}},
      {"kms-media",
       KMS_MEDIA_BIN,
       2,
       {"send", "--key-file", "k.json", "--to", "127.0.0.1:9", "--no-such-option"},
       {"send", "--to", "127.0.0.1:9"},
       {"send", "--key-file", "k.json", "--to", "127.0.0.1:9", "--packets", "lots"}},
  };
}

void PrintTo(const Program& program, std::ostream* out) { *out << program.name; }

testsupport::CommandResult run(const Program& program, std::vector<std::string> args) {
  args.insert(args.begin(), program.path);
  return testsupport::run_command(args);
}

class CliConventionsTest : public ::testing::TestWithParam<Program> {};

TEST_P(CliConventionsTest, VersionPrintsTheProjectVersion) {
  const Program& program = GetParam();
  const auto r = run(program, {"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, program.name + " " + KMS_EXPECTED_VERSION + "\n");
  EXPECT_TRUE(std::regex_match(std::string(KMS_EXPECTED_VERSION), std::regex(R"(\d+\.\d+\.\d+)")));
}

TEST_P(CliConventionsTest, HelpExitsZero) {
  const Program& program = GetParam();
  const auto r = run(program, {"--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("--version"), std::string::npos) << r.out;
}

TEST_P(CliConventionsTest, AnUnknownOptionIsAUsageError) {
  const Program& program = GetParam();
  const auto r = run(program, program.unknown);
  EXPECT_EQ(r.exit_code, program.usage_code) << r.err;
  EXPECT_NE(r.err.find("--no-such-option"), std::string::npos) << r.err;
}

TEST_P(CliConventionsTest, AMissingRequiredArgumentIsAUsageError) {
  const Program& program = GetParam();
  const auto r = run(program, program.missing);
  EXPECT_EQ(r.exit_code, program.usage_code) << r.err;
  EXPECT_FALSE(r.err.empty());
}

TEST_P(CliConventionsTest, AMalformedCommandLineIsAUsageError) {
  const Program& program = GetParam();
  const auto r = run(program, program.malformed);
  EXPECT_EQ(r.exit_code, program.usage_code) << r.err;
  EXPECT_FALSE(r.err.empty());
}

INSTANTIATE_TEST_SUITE_P(Programs, CliConventionsTest, ::testing::ValuesIn(programs()),
                         [](const auto& info) {
                           std::string name = info.param.name;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
