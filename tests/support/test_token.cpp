#include "test_token.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "hsm/mechanism.h"
#include "hsm/uri.h"

extern char** environ;

namespace testsupport {
namespace {

constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";
constexpr const char* kNssModule = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so";
constexpr const char* kNssTokenLabel = "NSS Certificate DB";

std::string random_pin(const std::string& prefix) {
  std::random_device device;
  std::uniform_int_distribution<unsigned> digit(0, 15);
  std::string pin = prefix;
  for (int i = 0; i < 16; ++i) pin += "0123456789abcdef"[digit(device)];
  return pin;
}

void write_file(const std::string& path, const std::string& text) {
  write_private_file(path, text, 0600);
}

std::string make_temp_dir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
  }
  return pattern;
}

void require_success(const CommandResult& result, const std::string& what) {
  if (result.exit_code != 0) {
    throw std::runtime_error(what + " failed (exit " + std::to_string(result.exit_code) +
                             "): " + result.out + result.err);
  }
}

}  // namespace

void write_private_file(const std::string& path, const std::string& text, unsigned mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, static_cast<mode_t>(mode)) == 0;
  std::size_t written = 0;
  while (ok && written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

int file_mode(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return -1;
  return static_cast<int>(info.st_mode & 07777);
}

std::string token_kind_name(TokenKind kind) {
  return kind == TokenKind::softhsm ? "softhsm" : "nss";
}

TempDir::TempDir(const std::string& prefix) : path_(make_temp_dir(prefix)) {}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::unique_ptr<TestToken> TestToken::create(TokenKind kind) {
  std::unique_ptr<TestToken> token(new TestToken());
  token->kind_ = kind;
  token->dir_ = make_temp_dir("kms-token-" + token_kind_name(kind));
  const std::string user_pin = random_pin("user-");
  token->pin_file_ = token->dir_ + "/user.pin";
  write_file(token->pin_file_, user_pin + "\n");

  if (kind == TokenKind::softhsm) {
    token->module_path_ = kSoftHsmModule;
    token->token_label_ = "kms-test";
    token->so_pin_ = random_pin("so-");
    std::filesystem::create_directory(token->dir_ + "/tokens");
    write_file(token->dir_ + "/softhsm2.conf", "directories.tokendir = " + token->dir_ +
                                                   "/tokens\n"
                                                   "objectstore.backend = file\n"
                                                   "log.level = ERROR\n"
                                                   "slots.removable = false\n");
    // The module reads SOFTHSM2_CONF at C_Initialize in this process.
    setenv("SOFTHSM2_CONF", (token->dir_ + "/softhsm2.conf").c_str(), 1);
    require_success(
        run_command({"softhsm2-util", "--init-token", "--free", "--label", token->token_label_,
                     "--so-pin", token->so_pin_, "--pin", user_pin},
                    token->environment()),
        "softhsm2-util --init-token");
  } else {
    token->module_path_ = kNssModule;
    token->token_label_ = kNssTokenLabel;
    // The database password is the token's user PIN.
    require_success(
        run_command({"certutil", "-N", "-d", "sql:" + token->dir_, "-f", token->pin_file_},
                    token->environment()),
        "certutil -N");
  }
  return token;
}

TestToken::~TestToken() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

hsm::ModuleConfig TestToken::module_config() const {
  hsm::ModuleConfig config;
  config.module = module_path_;
  if (kind_ == TokenKind::nss) {
    config.init_reserved =
        "configdir='sql:" + dir_ + "' certPrefix='' keyPrefix='' secmod='secmod.db' flags=";
  }
  return config;
}

std::string TestToken::uri() const {
  return kind_ == TokenKind::softhsm ? "pkcs11:token=kms-test"
                                     : "pkcs11:token=NSS%20Certificate%20DB";
}

hsm::SecureString TestToken::user_pin() const {
  return hsm::PinSource{pin_file_, std::nullopt}.read();
}

hsm::SecureString TestToken::so_pin() const { return hsm::SecureString(so_pin_); }

std::map<std::string, std::string> TestToken::environment() const {
  if (kind_ == TokenKind::softhsm) return {{"SOFTHSM2_CONF", dir_ + "/softhsm2.conf"}};
  return {};
}

std::string TestToken::profile_name() const {
  return kind_ == TokenKind::softhsm ? "aes-ecb-sha256" : "sp800-108-cmac";
}

CommandResult run_command(const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& environment,
                          const std::string& stdin_text) {
  if (argv.empty()) throw std::invalid_argument("run_command: empty argv");
  // Environment: this process's, with the given entries replaced or added.
  std::map<std::string, std::string> merged;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text(*entry);
    const auto equals = text.find('=');
    if (equals != std::string::npos) merged[text.substr(0, equals)] = text.substr(equals + 1);
  }
  for (const auto& [name, value] : environment) merged[name] = value;
  std::vector<std::string> env_strings;
  for (const auto& [name, value] : merged) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& text : env_strings) envp.push_back(text.data());
  envp.push_back(nullptr);
  std::vector<std::string> args(argv);
  std::vector<char*> argp;
  for (auto& text : args) argp.push_back(text.data());
  argp.push_back(nullptr);

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = -1;
  const int spawn_error = posix_spawnp(&pid, argp[0], &actions, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (spawn_error != 0) {
    close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    CommandResult failed;
    failed.exit_code = 127;
    failed.err = "cannot start " + argv[0] + ": " + std::strerror(spawn_error);
    return failed;
  }

  CommandResult result;
  std::size_t written = 0;
  int stdin_fd = in_pipe[1];
  if (stdin_text.empty()) {
    close(stdin_fd);
    stdin_fd = -1;
  } else {
    fcntl(stdin_fd, F_SETFL, O_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill the test
  }
  int open_outputs = 2;
  bool out_open = true, err_open = true;
  while (open_outputs > 0 || stdin_fd >= 0) {
    pollfd fds[3];
    nfds_t count = 0;
    if (out_open) fds[count++] = {out_pipe[0], POLLIN, 0};
    if (err_open) fds[count++] = {err_pipe[0], POLLIN, 0};
    if (stdin_fd >= 0) fds[count++] = {stdin_fd, POLLOUT, 0};
    if (poll(fds, count, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (nfds_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == stdin_fd) {
        const ssize_t n = write(stdin_fd, stdin_text.data() + written, stdin_text.size() - written);
        if (n > 0) written += static_cast<std::size_t>(n);
        if (n < 0 && errno != EAGAIN) written = stdin_text.size();
        if (written >= stdin_text.size()) {
          close(stdin_fd);
          stdin_fd = -1;
        }
        continue;
      }
      char buffer[4096];
      const ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        (fds[i].fd == out_pipe[0] ? result.out : result.err).append(buffer, n);
      } else if (n == 0 || errno != EINTR) {
        if (fds[i].fd == out_pipe[0]) out_open = false;
        if (fds[i].fd == err_pipe[0]) err_open = false;
        --open_outputs;
      }
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

CK_OBJECT_HANDLE generate_session_aes_key(hsm::Session& session, const std::string& label) {
  hsm::Mechanism keygen(CKM_AES_KEY_GEN);
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_ulong(CKA_VALUE_LEN, 32)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_ENCRYPT, true);
  if (!label.empty()) t.set_string(CKA_LABEL, label);
  return session.generate_key(keygen, std::move(t));
}

}  // namespace testsupport
