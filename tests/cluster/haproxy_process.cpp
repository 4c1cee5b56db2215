#include "haproxy_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "kmsd_fixture.h"

extern char** environ;

namespace kmstest {
namespace {

constexpr const char* kHaproxy = "/usr/sbin/haproxy";

// A port the OS considers free right now. HAProxy needs a number in its configuration; if
// another process takes it before HAProxy binds, HAProxy exits and the caller picks again.
std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error(std::string("free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string configuration(const std::vector<BalancedNode>& nodes, std::uint16_t port,
                          const std::string& socket_path, const std::string& server_ca) {
  std::ostringstream cfg;
  cfg << "global\n"
      << "  stats socket " << socket_path << " mode 600 level admin\n"
      << "  log stderr format short local0 info\n"
      << "defaults\n"
      << "  mode tcp\n"
      << "  log global\n"
      << "  option tcplog\n"
      << "  timeout connect 2s\n"
      << "  timeout client 60s\n"
      << "  timeout server 60s\n"
      << "  retries 3\n"
      << "  option redispatch\n"
      << "frontend kms\n"
      << "  bind 127.0.0.1:" << port << "\n"
      << "  default_backend kmsd\n"
      << "backend kmsd\n"
      << "  balance roundrobin\n"
      << "  option httpchk\n"
      << "  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost\n"
      << "  http-check expect status 200\n"
      << "  default-server check check-ssl check-sni localhost verify required ca-file "
      << server_ca << " verifyhost localhost inter 200ms fall 2 rise 2\n";
  for (const auto& node : nodes) {
    cfg << "  server " << node.name << " 127.0.0.1:" << node.port << "\n";
  }
  return cfg.str();
}

}  // namespace

bool HaproxyProcess::available() { return ::access(kHaproxy, X_OK) == 0; }

HaproxyProcess::HaproxyProcess(const std::string& dir, const std::vector<BalancedNode>& nodes,
                               const std::string& server_ca)
    : socket_path_(dir + "/haproxy.sock"), log_path_(dir + "/haproxy.log") {
  const std::string config_path = dir + "/haproxy.cfg";
  for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) {
    port_ = free_loopback_port();
    ::unlink(socket_path_.c_str());
    std::ofstream(config_path) << configuration(nodes, port_, socket_path_, server_ca);
    std::vector<std::string> args = {kHaproxy, "-db", "-f", config_path};
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, kHaproxy, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error(std::string("posix_spawn haproxy: ") + std::strerror(rc));
    bool exited = false;
    const bool ready = wait_until([&] {
      int status = 0;
      exited = ::waitpid(pid, &status, WNOHANG) == pid;
      if (exited) return true;
      pid_ = pid;
      try {
        return runtime_command("show info").find("Pid:") != std::string::npos;
      } catch (const std::exception&) {
        return false;
      }
    });
    if (exited) {
      pid_ = -1;  // the port was taken meanwhile (or the configuration is wrong): try again
      continue;
    }
    if (!ready) throw std::runtime_error("haproxy did not start: " + log());
  }
  if (pid_ < 0) throw std::runtime_error("haproxy exited at start: " + log());
}

HaproxyProcess::~HaproxyProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
}

std::string HaproxyProcess::runtime_command(const std::string& command) const {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path_.c_str(), sizeof address.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    throw std::runtime_error("connect to the haproxy runtime API: " +
                             std::string(std::strerror(errno)));
  }
  const std::string line = command + "\n";
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    throw std::runtime_error("write to the haproxy runtime API");
  }
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) reply.append(buffer, n);
  ::close(fd);
  return reply;
}

std::string HaproxyProcess::node_status(const std::string& name) const {
  // `show stat` is CSV: pxname,svname,...; the status is the column named "status".
  std::istringstream csv(runtime_command("show stat"));
  std::string header;
  std::getline(csv, header);
  std::size_t status_column = 0;
  {
    std::istringstream fields(header.substr(header.find_first_not_of("# ")));
    std::size_t index = 0;
    for (std::string field; std::getline(fields, field, ','); ++index) {
      if (field == "status") status_column = index;
    }
  }
  for (std::string row; std::getline(csv, row);) {
    std::istringstream fields(row);
    std::vector<std::string> columns;
    for (std::string field; std::getline(fields, field, ',');) columns.push_back(field);
    if (columns.size() > status_column && columns[0] == "kmsd" && columns[1] == name) {
      return columns[status_column];
    }
  }
  return "unknown";
}

bool HaproxyProcess::wait_for_status(const std::string& name, const std::string& status) const {
  return wait_until([&] {
    try {
      return node_status(name) == status;
    } catch (const std::exception&) {
      return false;
    }
  });
}

std::string HaproxyProcess::log() const { return read_file(log_path_); }

}  // namespace kmstest
