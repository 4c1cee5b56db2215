#include "kmsd_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace kmstest {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::optional<kms::client::Bytes> from_hex(const std::string& text) {
  kms::client::Bytes out;
  if (text.size() % 2) return std::nullopt;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16)));
  }
  return out;
}

}  // namespace

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds patience) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

std::unique_ptr<KmsdEnvironment> KmsdEnvironment::create(testsupport::TokenKind kind) {
  std::unique_ptr<KmsdEnvironment> environment(new KmsdEnvironment());
  environment->token_ = testsupport::TestToken::create(kind);
  environment->dir_ = std::make_unique<testsupport::TempDir>("kmsd-test");
  environment->pki_ = TestPki::create(environment->dir());
  environment->write_config("kmsd.toml");
  auto result = environment->provision({"init"});
  if (result.exit_code != 0) throw std::runtime_error("kms-provision init: " + result.err);
  for (const char* identity : {kAlice, kBob, kCarol, kBridgeId}) {
    const std::string kind = std::string(identity) == kBridgeId ? "bridge" : "subscriber";
    std::string file = environment->dir() + "/" + std::string(identity).substr(4, 5) + ".key";
    result = environment->provision(
        {kind, "add", identity, "--insecure-plaintext-export", "--out", file});
    if (result.exit_code != 0) {
      throw std::runtime_error("kms-provision " + kind + " add " + identity + ": " + result.err);
    }
    environment->key_files_[identity] = file;
  }
  return environment;
}

KmsdEnvironment::~KmsdEnvironment() = default;

std::string KmsdEnvironment::write_config(const std::string& name,
                                          const ConfigOverrides& overrides) const {
  const auto quoted = [](const std::string& text) { return "\"" + text + "\""; };
  std::map<std::string, std::string> server = {
      {"listen", quoted("127.0.0.1:0")},
      {"tls_cert", quoted(overrides.tls_cert.empty() ? pki_.server.cert : overrides.tls_cert)},
      {"tls_key", quoted(overrides.tls_key.empty() ? pki_.server.key : overrides.tls_key)},
      {"bridge_ca", quoted(pki_.bridge_ca)},
      {"worker_threads", "2"},
      {"io_threads", "2"},
      {"drain_timeout_ms", "5000"}};
  std::map<std::string, std::string> limits = {
      {"handshake_timeout_ms", "2000"}, {"read_timeout_ms", "2000"}, {"write_timeout_ms", "2000"}};
  std::map<std::string, std::string> log = {{"level", quoted("info")}};
  for (const auto& [key, value] : overrides.server) server[key] = value;
  for (const auto& [key, value] : overrides.limits) limits[key] = value;
  for (const auto& [key, value] : overrides.log) log[key] = value;
  std::ostringstream toml;
  toml << "[server]\n";
  for (const auto& [key, value] : server) toml << key << " = " << value << "\n";
  toml << "[limits]\n";
  for (const auto& [key, value] : limits) toml << key << " = " << value << "\n";
  toml << "[audit]\npath = \""
       << (overrides.audit_path.empty() ? audit_path(name) : overrides.audit_path) << "\"\n";
  for (const auto& [key, value] : overrides.audit) toml << key << " = " << value << "\n";
  toml << "[log]\n";
  for (const auto& [key, value] : log) toml << key << " = " << value << "\n";
  toml << "[token]\nmodule = \""
       << (overrides.token_module.empty() ? token_->module_path() : overrides.token_module)
       << "\"\n"
       << "uri = \"" << token_->uri() << "\"\n"
       << (token_->module_config().init_reserved
               ? "init_reserved = \"" + *token_->module_config().init_reserved + "\"\n"
               : std::string())
       << "pin_file = \"" << token_->pin_file() << "\"\n"
       << "profile = \"" << token_->profile_name() << "\"\n"
       << (overrides.database_url.empty()
               ? "[database]\npath = \"" + dir() + "/kms.db\"\n"
               : "[database]\nurl = \"" + overrides.database_url + "\"\n")
       << overrides.extra;
  const std::string path = dir() + "/" + name;
  std::ofstream(path) << toml.str();
  return path;
}

testsupport::CommandResult KmsdEnvironment::provision(std::vector<std::string> args) const {
  std::vector<std::string> argv = {KMS_PROVISION_BIN, "--config", dir() + "/kmsd.toml"};
  argv.insert(argv.end(), args.begin(), args.end());
  return testsupport::run_command(argv, token_->environment());
}

kms::client::Secret KmsdEnvironment::root_key(const std::string& identity) const {
  std::istringstream in(read_file(key_files_.at(identity)));
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto bytes = from_hex(line);
    if (!bytes || bytes->size() != 32) break;
    return kms::client::Secret(*bytes);
  }
  throw std::runtime_error("no root key for " + identity);
}

KmsdProcess::KmsdProcess(KmsdEnvironment& environment, const std::string& config,
                         std::vector<std::string> extra_args,
                         std::map<std::string, std::string> extra_environment) {
  static int counter = 0;
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(++counter);
  const std::string port_file = environment.dir() + "/kmsd-" + tag + ".port";
  log_path_ = environment.dir() + "/kmsd-" + tag + ".log";
  std::vector<std::string> args = {KMSD_BIN, "--config", config, "--port-file", port_file};
  // Any free port unless the caller names one (a node restarted where a balancer expects it).
  if (std::find(extra_args.begin(), extra_args.end(), "--listen") == extra_args.end()) {
    args.insert(args.end(), {"--listen", "127.0.0.1:0"});
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  auto token_env = environment.token().environment();
  token_env.merge(extra_environment);
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (!token_env.contains(key)) env_strings.push_back(entry);
  }
  for (const auto& [key, value] : token_env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  const int rc = posix_spawn(&pid_, KMSD_BIN, &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn kmsd: ") + std::strerror(rc));

  bool exited = false;
  const bool listening = wait_until([&] {
    const std::string text = read_file(port_file);
    if (!text.empty()) {
      port_ = static_cast<std::uint16_t>(std::stoi(text));
      return true;
    }
    int status = 0;
    exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
    return exited;
  });
  if (exited) {
    pid_ = -1;
    throw std::runtime_error("kmsd exited at start: " + log());
  }
  if (!listening) throw std::runtime_error("kmsd did not listen in time: " + log());
}

KmsdProcess::~KmsdProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 1000; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

void KmsdProcess::signal(int signal) const { ::kill(pid_, signal); }

int KmsdProcess::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool KmsdProcess::running() const {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
  pid_ = -1;
  return false;
}

long KmsdProcess::rss_kb() const {
  std::istringstream in(read_file("/proc/" + std::to_string(pid_) + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

std::string KmsdProcess::log() const { return read_file(log_path_); }

}  // namespace kmstest
