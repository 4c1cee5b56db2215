// A real PKCS#11 token created fresh in a temporary folder for one test (suite):
// SoftHSM 2 (softhsm2-util --init-token) or NSS softoken (certutil -N), removed afterwards.
// Both are created out of process; NSS's user PIN is its database password, set by
// `certutil -N -f pinfile`. A library reads its configuration at C_Initialize, so a test
// process should hold at most one live hsm::Module per token kind at a time.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "hsm/module.h"
#include "hsm/secure_bytes.h"
#include "hsm/session.h"

namespace testsupport {

enum class TokenKind { softhsm, nss };
std::string token_kind_name(TokenKind kind);  // "softhsm" / "nss", for test names

class TestToken {
 public:
  // Creates the folder, the token (label "kms-test"), SO and user PINs, and a pin file.
  // For SoftHSM it also sets SOFTHSM2_CONF in this process (the module reads it at
  // C_Initialize), so create tokens of one kind per test process at a time.
  static std::unique_ptr<TestToken> create(TokenKind kind);
  ~TestToken();  // removes the folder

  TokenKind kind() const noexcept { return kind_; }
  const std::string& dir() const noexcept { return dir_; }
  hsm::ModuleConfig module_config() const;  // module path (+ NSS init args)
  const std::string& module_path() const noexcept { return module_path_; }
  std::string uri() const;  // "pkcs11:token=kms-test" (NSS: its DB token)
  hsm::SecureString user_pin() const;
  hsm::SecureString so_pin() const;  // SoftHSM only; NSS has no separate SO PIN (empty)
  const std::string& token_label() const noexcept { return token_label_; }
  const std::string& pin_file() const noexcept { return pin_file_; }  // holds the user PIN
  // Environment a child process (kms-provision, kmsd, pkcs11-tool) needs for this token.
  std::map<std::string, std::string> environment() const;
  std::string profile_name() const;  // token profile to use: "aes-ecb-sha256" / "sp800-108-cmac"

 private:
  TestToken() = default;
  TokenKind kind_ = TokenKind::softhsm;
  std::string dir_;
  std::string module_path_;
  std::string pin_file_;
  std::string token_label_;
  std::string so_pin_;
};

// A fresh empty temporary folder, removed by its destructor (for tests that need files).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "kms-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// Writes `text` to `path` (created or truncated) with exactly `mode`, whatever the umask:
// PIN files (kms-provision and kmsd refuse one that group or others may read), key files.
void write_private_file(const std::string& path, const std::string& text, unsigned mode = 0600);
// The permission bits of a file (st_mode & 07777); -1 if it does not exist.
int file_mode(const std::string& path);

// Runs a command (argv) with extra environment variables; captures stdout and stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// A generated AES-256 session object (CKA_ENCRYPT), labelled when a label is given: a key a
// test can make, count by its label and destroy.
CK_OBJECT_HANDLE generate_session_aes_key(hsm::Session& session, const std::string& label = {});

CommandResult run_command(const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& environment = {},
                          const std::string& stdin_text = {});

}  // namespace testsupport
