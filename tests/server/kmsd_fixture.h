// A real kmsd for tests: a fresh SoftHSM token (tests/support), test PKI, the KMS keys,
// three subscribers and one bridge provisioned with kms-provision, a generated
// configuration, and kmsd started as a child process on a port chosen by the OS.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kms/client/secret.h"
#include "test_pki.h"
#include "test_token.h"

namespace kmstest {

inline constexpr const char* kAlice = "sip:alice@ims.example.net";
inline constexpr const char* kBob = "sip:bob@ims.example.net";
inline constexpr const char* kCarol = "sip:carol@ims.example.net";

// How long a test waits for a condition before it gives up: generous, so that a loaded
// machine is slow, never wrong.
inline constexpr std::chrono::seconds kPatience{30};

// Polls `condition` (every 20 ms) until it holds or `patience` has passed; returns whether
// it held. For waiting on events (a log line, a metric, a file), never on durations.
bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds patience = kPatience);

struct ConfigOverrides {
  std::map<std::string, std::string> server;  // [server] key -> TOML value text
  std::map<std::string, std::string> limits;  // [limits] key -> TOML value text
  std::map<std::string, std::string> log;     // [log] key -> TOML value text
  std::map<std::string, std::string> audit;   // [audit] key -> TOML value text (not path)
  std::string audit_path;                     // default: audit_path(name)
  std::string tls_cert;                       // default: the PKI's server certificate
  std::string tls_key;
  std::string token_module;  // default: the test token's module (e.g. the fault module)
  std::string database_url;  // [database] url; default: path = the environment's kms.db
  std::string extra;         // appended TOML text
};

class KmsdEnvironment {
 public:
  // Creates the token, PKI, config and provisions kAlice, kBob, kCarol and kBridgeId.
  static std::unique_ptr<KmsdEnvironment> create(
      testsupport::TokenKind kind = testsupport::TokenKind::softhsm);
  ~KmsdEnvironment();

  const std::string& dir() const { return dir_->path(); }
  const TestPki& pki() const { return pki_; }
  testsupport::TestToken& token() { return *token_; }
  std::string profile() const { return token_->profile_name(); }
  // Each configuration gets its own audit log (one writer per log): audit-<name>.log.
  std::string audit_path(const std::string& config_name = "kmsd.toml") const {
    return dir() + "/audit-" + config_name + ".log";
  }

  // Writes a configuration file (named by `name`) and returns its path.
  std::string write_config(const std::string& name, const ConfigOverrides& overrides = {}) const;
  // The plaintext root key kms-provision exported for an identity (UE / bridge side).
  kms::client::Secret root_key(const std::string& identity) const;
  const std::string& key_file(const std::string& identity) const { return key_files_.at(identity); }
  // Runs kms-provision with this environment's config; returns the result.
  testsupport::CommandResult provision(std::vector<std::string> args) const;

 private:
  KmsdEnvironment() = default;
  std::unique_ptr<testsupport::TestToken> token_;
  std::unique_ptr<testsupport::TempDir> dir_;
  TestPki pki_;
  std::map<std::string, std::string> key_files_;
};

class KmsdProcess {
 public:
  // Starts kmsd --config FILE --listen 127.0.0.1:0 --port-file ...; waits until it listens.
  // extra_args may name another --listen address (then 127.0.0.1:0 is not added).
  // extra_environment: variables set for kmsd beside the token's (KMS_FAULT_TARGET, ...).
  // Throws std::runtime_error with kmsd's log if it exits or does not listen in kPatience.
  KmsdProcess(KmsdEnvironment& environment, const std::string& config,
              std::vector<std::string> extra_args = {},
              std::map<std::string, std::string> extra_environment = {});
  ~KmsdProcess();  // SIGTERM, then SIGKILL after 10 s

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  void signal(int signal) const;
  // Sends SIGTERM and waits; returns the exit status (or 128 + signal).
  int terminate();
  bool running() const;
  long rss_kb() const;
  std::string log() const;

 private:
  mutable pid_t pid_ = -1;  // -1 once reaped
  std::uint16_t port_ = 0;
  std::string log_path_;
};

// One token and one kmsd for a whole suite (gtest runs SetUpTestSuite once per suite):
// `class MyTest : public SharedKmsdTest<MyTest>`; the Suite parameter gives each suite its
// own environment.
template <class Suite>
class SharedKmsdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    environment_ = KmsdEnvironment::create().release();
    kmsd_ = new KmsdProcess(*environment_, environment_->dir() + "/kmsd.toml");
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete environment_;
    environment_ = nullptr;
  }
  static inline KmsdEnvironment* environment_ = nullptr;
  static inline KmsdProcess* kmsd_ = nullptr;
};

}  // namespace kmstest
