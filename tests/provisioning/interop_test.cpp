// Interop: tools we did not write list what kms-provision created.
// SoftHSM: OpenSC's pkcs11-tool, a separate process, reads the attributes.
// NSS softoken: pkcs11-tool cannot pass NSS's C_Initialize arguments, and p11-kit's proxy
// ignores user module configs when running as root (as CI does), so NSS's own symkeyutil
// lists the keys instead (it shows labels, sizes and "<restricted>" for sensitive keys).
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "cli_fixture.h"

namespace {

using clitest::hex;

struct ListedKey {
  std::string header;  // "Secret Key Object; AES length 32"
  std::string usage;   // "derive", "wrap, unwrap", ...
  std::string access;  // "sensitive, always sensitive, never extractable, local"
};

std::map<std::string, ListedKey> parse_pkcs11_tool(const std::string& out) {
  std::map<std::string, ListedKey> keys;
  std::istringstream in(out);
  std::string line, label;
  ListedKey current;
  auto flush = [&] {
    if (!label.empty()) keys[label] = current;
    label.clear();
    current = {};
  };
  auto value = [](const std::string& text) {
    const auto colon = text.find(':');
    std::string v = text.substr(colon + 1);
    return v.substr(v.find_first_not_of(' '));
  };
  while (std::getline(in, line)) {
    if (line.rfind("Secret Key Object", 0) == 0) {
      flush();
      current.header = line;
    } else if (line.find("label:") != std::string::npos) {
      label = value(line);
    } else if (line.find("Usage:") != std::string::npos) {
      current.usage = value(line);
    } else if (line.find("Access:") != std::string::npos) {
      current.access = value(line);
    }
  }
  flush();
  return keys;
}

class InteropTest : public clitest::CliTest {};

TEST_P(InteropTest, ToolsWeDidNotWriteSeeSensitiveOnePurposeKeys) {
  init();
  personalisation_key("factory1");
  const auto token_mode = cli({"--key-store", "token", "subscriber", "import",
                               "sip:alice@ims.example.net", "--wrapped-hex", random_wrapped_hex()});
  ASSERT_EQ(token_mode.exit_code, 0) << token_mode.err;
  const std::string pin = clitest::read_file(token_->pin_file())
                              .substr(0, clitest::read_file(token_->pin_file()).find('\n'));

  if (GetParam() == testsupport::TokenKind::nss) {
    const auto listed = testsupport::run_command(
        {"symkeyutil", "-L", "-d", "sql:" + token_->dir(), "-f", token_->pin_file()},
        token_->environment());
    ASSERT_EQ(listed.exit_code, 0) << listed.err;
    for (const char* label :
         {"kms/master", "kms/storage", "kms/transport", "kms/personalisation/factory1",
          "kms/subscriber/sip:alice@ims.example.net/v1"}) {
      std::istringstream in(listed.out);
      std::string line;
      bool found = false;
      while (std::getline(in, line)) {
        if (line.rfind(label, 0) == 0) {
          found = true;
          EXPECT_NE(line.find("32"), std::string::npos) << line;
          EXPECT_NE(line.find("aes"), std::string::npos) << line;
          EXPECT_NE(line.find("<restricted>"), std::string::npos) << line;  // sensitive
        }
      }
      EXPECT_TRUE(found) << label << " not listed by symkeyutil:\n" << listed.out;
    }
    return;
  }

  const auto listed = testsupport::run_command(
      {"pkcs11-tool", "--module", token_->module_path(), "--token-label", "kms-test", "--login",
       "--pin", pin, "--list-objects", "--type", "secrkey"},
      token_->environment());
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const auto keys = parse_pkcs11_tool(listed.out);
  const std::map<std::string, std::string> expected_usage = {
      {"kms/master", "derive"},
      {"kms/storage", "wrap, unwrap"},
      {"kms/transport", "unwrap"},
      {"kms/personalisation/factory1", "wrap"},
      {"kms/subscriber/sip:alice@ims.example.net/v1", "derive"},
  };
  EXPECT_EQ(keys.size(), expected_usage.size()) << listed.out;
  for (const auto& [label, usage] : expected_usage) {
    SCOPED_TRACE(label);
    auto key = keys.find(label);
    ASSERT_NE(key, keys.end()) << listed.out;
    // SoftHSM leaves CKA_VALUE_LEN at 0 on unwrapped keys (it refuses the attribute in an
    // unwrap template), so pkcs11-tool prints no length for those.
    EXPECT_EQ(key->second.header.rfind("Secret Key Object; AES", 0), 0u) << key->second.header;
    if (label.rfind("kms/personalisation/", 0) != 0 && label.rfind("kms/subscriber/", 0) != 0) {
      EXPECT_EQ(key->second.header, "Secret Key Object; AES length 32");
    }
    EXPECT_EQ(key->second.usage, usage);
    EXPECT_EQ(key->second.access.rfind("sensitive", 0), 0u) << key->second.access;
    // Not extractable: the word appears only inside "never extractable".
    std::string access = key->second.access;
    const auto never = access.find("never extractable");
    if (never != std::string::npos) access.erase(never, 17);
    EXPECT_EQ(access.find("extractable"), std::string::npos) << key->second.access;
  }
  // Generated in the token: always sensitive, never extractable, local. Keys that came in
  // from outside (C_CreateObject, C_UnwrapKey) cannot claim those.
  for (const char* generated : {"kms/master", "kms/storage"}) {
    EXPECT_EQ(keys.at(generated).access, "sensitive, always sensitive, never extractable, local");
  }
  EXPECT_EQ(keys.at("kms/transport").access.find("local"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Tokens, InteropTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         clitest::kind_param_name);

}  // namespace
