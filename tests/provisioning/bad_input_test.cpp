// Every CLI error: its exit code, one line on stderr, and the token and the database left
// exactly as they were.
#include <gtest/gtest.h>

#include "cli_fixture.h"

namespace {

using clitest::Bytes;
using clitest::hex;

class BadInputTest : public clitest::CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    init();
    const Bytes key = testkdf::random_bytes(32);
    const auto result = cli({"subscriber", "import", "sip:existing@ims.example.net",
                             "--wrapped-hex", hex(testkdf::wrap_pad(transport_, key))});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    personalisation_key("p1");
    objects_before_ = token_objects();
    database_before_ = database_snapshot();
  }

  // Runs the command with the standard arguments (or `raw` ones) and checks the outcome.
  void expect_failure(int exit_code, const std::vector<std::string>& args,
                      const std::string& message_part, bool raw = false) {
    SCOPED_TRACE(args.empty() ? "" : args[0]);
    const auto result = raw ? cli_raw(args) : cli(args);
    EXPECT_EQ(result.exit_code, exit_code) << result.err;
    EXPECT_TRUE(clitest::one_line(result.err)) << "stderr: [" << result.err << "]";
    EXPECT_NE(result.err.find(message_part), std::string::npos) << result.err;
    EXPECT_EQ(token_objects(), objects_before_);
    EXPECT_EQ(database_snapshot(), database_before_);
  }

  std::vector<std::string> with_base(std::vector<std::string> replace,
                                     const std::vector<std::string>& command) {
    // base_args() with some options replaced: {"--pin-file", "x"} etc.
    std::vector<std::string> args = base_args();
    for (std::size_t i = 0; i + 1 < replace.size(); i += 2) {
      auto it = std::find(args.begin(), args.end(), replace[i]);
      if (it != args.end()) {
        *(it + 1) = replace[i + 1];
      } else {
        args.push_back(replace[i]);
        args.push_back(replace[i + 1]);
      }
    }
    args.erase(args.begin());  // the binary: cli_raw adds it
    args.insert(args.end(), command.begin(), command.end());
    return args;
  }

  std::string out(const std::string& name) { return dir_->path() + "/" + name; }

  std::vector<std::string> objects_before_;
  std::string database_before_;
};

TEST_P(BadInputTest, InvalidIdentity) {
  for (const char* id : {"alice", "sip:alice", "mailto:alice@example.net", "tel:12345",
                         "sip:alice@example.net;transport=tcp"}) {
    expect_failure(4, {"subscriber", "add", id, "--insecure-plaintext-export", "--out", out("x")},
                   "is not an IMS public identity");
    EXPECT_FALSE(std::filesystem::exists(out("x")));
  }
  expect_failure(4, {"bridge", "import", "bridge-7", "--wrapped-hex", "00"},
                 "is not an IMS public identity");
}

TEST_P(BadInputTest, DuplicateIdentity) {
  expect_failure(5,
                 {"subscriber", "add", "sip:existing@ims.example.net", "--personalisation-key",
                  "p1", "--out", out("dup")},
                 "already exists");
  EXPECT_FALSE(std::filesystem::exists(out("dup")));
  expect_failure(5,
                 {"subscriber", "import", "sip:existing@ims.example.net", "--wrapped-hex",
                  random_wrapped_hex()},
                 "already exists");
  expect_failure(
      5, {"personalisation-key", "import", "--label", "p1", "--wrapped-hex", random_wrapped_hex()},
      "already exists");
}

TEST_P(BadInputTest, WrongPin) {
  const std::string pin = out("wrong.pin");
  clitest::write_file(pin, "00000000\n");
  expect_failure(8,
                 with_base({"--pin-file", pin}, {"subscriber", "add", "sip:new@ims.example.net",
                                                 "--insecure-plaintext-export", "--out", out("k")}),
                 "CKR_PIN_INCORRECT", true);
  EXPECT_FALSE(std::filesystem::exists(out("k")));
}

// A PIN file group or others may read or write is refused before the token is used (exit 3,
// one line naming the file and its mode, never the PIN); KMS_ALLOW_INSECURE_PIN_FILE=1
// accepts it with a one-line warning.
TEST_P(BadInputTest, PinFileOthersMayReadIsRefused) {
  const std::string pin = out("shared.pin");
  const std::string pin_value = token_->user_pin().value();
  for (const unsigned mode : {0644U, 0640U, 0606U}) {
    testsupport::write_private_file(pin, pin_value + "\n", mode);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", mode);
    expect_failure(
        3,
        with_base({"--pin-file", pin}, {"subscriber", "add", "sip:new@ims.example.net",
                                        "--insecure-plaintext-export", "--out", out("k")}),
        "PIN file " + pin + " has mode " + octal, true);
    EXPECT_FALSE(std::filesystem::exists(out("k")));
  }
  std::vector<std::string> argv{KMS_PROVISION_PATH};
  for (const auto& arg : with_base({"--pin-file", pin}, {"status"})) argv.push_back(arg);
  auto result = testsupport::run_command(argv, token_->environment());
  EXPECT_EQ(result.exit_code, 3) << result.err;
  EXPECT_EQ(result.err.find(pin_value), std::string::npos) << "the PIN is in the message";
  auto environment = token_->environment();
  environment["KMS_ALLOW_INSECURE_PIN_FILE"] = "1";
  result = testsupport::run_command(argv, environment);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("kms-provision: warning: PIN file " + pin + " has mode 0606"),
            std::string::npos)
      << result.err;
  EXPECT_NE(result.err.find("accepted because KMS_ALLOW_INSECURE_PIN_FILE=1"), std::string::npos)
      << result.err;
}

TEST_P(BadInputTest, NoPinSourceAndNoPinArgument) {
  std::vector<std::string> args = base_args();
  args.erase(args.begin());
  auto pin = std::find(args.begin(), args.end(), "--pin-file");
  args.erase(pin, pin + 2);
  std::vector<std::string> command = args;
  command.insert(command.end(), {"init"});
  expect_failure(3, command, "no PIN source", true);
  // The PIN is never an argument.
  command = args;
  command.insert(command.end(), {"--pin", "1234", "init"});
  expect_failure(2, command, "--pin", true);
  // An unreadable PIN file.
  expect_failure(3, with_base({"--pin-file", out("missing.pin")}, {"init"}), "cannot read", true);
}

TEST_P(BadInputTest, MissingToken) {
  expect_failure(7, with_base({"--token-uri", "pkcs11:token=no-such-token"}, {"init"}),
                 "no token matches 'pkcs11:token=no-such-token'", true);
  expect_failure(7, with_base({"--module", "/nonexistent/libpkcs11.so"}, {"init"}),
                 "/nonexistent/libpkcs11.so", true);
}

TEST_P(BadInputTest, MissingMechanism) {
  const std::string profile =
      GetParam() == testsupport::TokenKind::softhsm ? "sp800-108-cmac" : "aes-ecb-sha256";
  const std::string mechanism = GetParam() == testsupport::TokenKind::softhsm
                                    ? "CKM_SP800_108_COUNTER_KDF"
                                    : "CKM_AES_ECB_ENCRYPT_DATA";
  expect_failure(
      9,
      with_base({"--profile", profile}, {"subscriber", "add", "sip:n@ims.example.net",
                                         "--insecure-plaintext-export", "--out", out("k")}),
      mechanism, true);
}

TEST_P(BadInputTest, BadKeyMaterial) {
  const Bytes other = testkdf::random_bytes(32);
  expect_failure(11,
                 {"subscriber", "import", "sip:n@ims.example.net", "--wrapped-hex",
                  hex(testkdf::wrap_pad(other, testkdf::random_bytes(32)))},
                 "does not unwrap");
  expect_failure(11, {"subscriber", "import", "sip:n@ims.example.net", "--wrapped-hex", "zz"},
                 "not hex");
  expect_failure(
      11,
      {"subscriber", "import", "sip:n@ims.example.net", "--wrapped-hex", random_wrapped_hex(16)},
      "AES-256 key (32 bytes)");
}

TEST_P(BadInputTest, UnknownIdentityOrPersonalisationKey) {
  expect_failure(6, {"subscriber", "show", "sip:nobody@ims.example.net"}, "is not provisioned");
  expect_failure(6, {"subscriber", "revoke", "sip:nobody@ims.example.net"}, "is not provisioned");
  expect_failure(
      6,
      {"subscriber", "rotate", "sip:nobody@ims.example.net", "--wrapped-hex", random_wrapped_hex()},
      "is not provisioned");
  expect_failure(6,
                 {"subscriber", "add", "sip:n@ims.example.net", "--personalisation-key", "nope",
                  "--out", out("k")},
                 "personalisation key nope not found");
  EXPECT_FALSE(std::filesystem::exists(out("k")));
}

TEST_P(BadInputTest, UsageErrors) {
  clitest::write_file(out("exists"), "keep me");
  expect_failure(2,
                 {"subscriber", "add", "sip:n@ims.example.net", "--insecure-plaintext-export",
                  "--out", out("exists")},
                 "refusing to overwrite");
  EXPECT_EQ(clitest::read_file(out("exists")), "keep me");
  expect_failure(2, {"subscriber", "add", "sip:n@ims.example.net", "--out", out("k")},
                 "exactly one of");
  expect_failure(2, {"subscriber", "frobnicate"}, "subcommand");
  expect_failure(2, {}, "subcommand");
}

INSTANTIATE_TEST_SUITE_P(Tokens, BadInputTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         clitest::kind_param_name);

// A token without the KMS keys: every command that needs them says which are missing.
class NotInitialisedTest : public clitest::CliTest {};

TEST_P(NotInitialisedTest, CommandsNameTheMissingKeys) {
  const auto objects = token_objects();
  const auto result =
      cli({"subscriber", "import", "sip:n@ims.example.net", "--wrapped-hex", random_wrapped_hex()});
  EXPECT_EQ(result.exit_code, 10) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("kms/transport"), std::string::npos) << result.err;
  EXPECT_EQ(token_objects(), objects);
  EXPECT_EQ(database_snapshot(), "");  // the file exists, no records
  const auto status = cli({"status"});
  EXPECT_EQ(status.exit_code, 10);
  EXPECT_NE(status.out.find("missing  kms/master"), std::string::npos) << status.out;
}

INSTANTIATE_TEST_SUITE_P(Tokens, NotInitialisedTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         clitest::kind_param_name);

}  // namespace
