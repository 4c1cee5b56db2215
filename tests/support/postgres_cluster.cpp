#include "postgres_cluster.h"

#include <netinet/in.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "storage/postgres.h"

extern char** environ;

namespace testsupport {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBinaries = "/usr/lib/postgresql/15/bin";

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("no free loopback port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::optional<std::string> PostgresCluster::binaries() {
  if (fs::exists(fs::path(kBinaries) / "initdb") && fs::exists(fs::path(kBinaries) / "pg_ctl")) {
    return std::string(kBinaries);
  }
  return std::nullopt;
}

std::string PostgresCluster::missing_message() {
  return std::string("PostgreSQL 15 binaries not found in ") + kBinaries +
         " (scripts/setup installs postgresql-15): PostgreSQL backend tests skipped";
}

PostgresCluster::PostgresCluster() {
  const std::optional<std::string> bin = binaries();
  if (!bin) throw std::runtime_error(missing_message());
  bin_ = *bin;
  char pattern[] = "/tmp/kms-pg-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  folder_ = pattern;
  if (::geteuid() == 0) {  // initdb and postgres refuse root: the folder is postgres's
    const passwd* postgres = ::getpwnam("postgres");
    if (postgres == nullptr) throw std::runtime_error("running as root but no postgres user");
    if (::chown(folder_.c_str(), postgres->pw_uid, postgres->pw_gid) != 0) {
      throw std::runtime_error("chown " + folder_ + " failed");
    }
  }
  // Local (socket) connections trusted; TCP needs the password (the wrong-password tests).
  run("'" + bin_ + "/initdb' -D '" + folder_ + "/data' -U postgres --auth-local=trust " +
      "--auth-host=scram-sha-256 --no-sync --no-instructions -E UTF8 > '" + folder_ +
      "/initdb.log' 2>&1");
  std::ofstream(folder_ + "/data/postgresql.conf", std::ios::app)
      << "\n# kms tests: a private server. fsync off only to spare the shared test machine's\n"
         "# disk; commits still wait for the WAL write (synchronous_commit = on).\n"
         "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
         "unix_socket_directories = '"
      << folder_ << "'\nlisten_addresses = '127.0.0.1'\n";
  start();
}

PostgresCluster::~PostgresCluster() {
  try {
    if (running_) {
      run("'" + bin_ + "/pg_ctl' -D '" + folder_ + "/data' -m immediate -w stop >> '" + folder_ +
          "/pg_ctl.log' 2>&1");
    }
  } catch (...) {  // the folder goes anyway
  }
  std::error_code ignored;
  fs::remove_all(folder_, ignored);
}

PostgresCluster& PostgresCluster::shared() {
  static PostgresCluster cluster;  // destroyed (stopped) at exit, pass or fail
  return cluster;
}

void PostgresCluster::run(const std::string& command) const {
  const std::string as_owner =
      ::geteuid() == 0 ? "runuser -u postgres -- sh -c \"" + command + "\"" : command;
  // Not std::system(): it blocks SIGCHLD in the calling thread while it waits, so the
  // child's exit is queued for the process instead of being discarded, and wakes another
  // thread's blocking socket read, which with SO_RCVTIMEO fails with EINTR (the HTTPS
  // clients of a test running load while it stops or starts the server).
  const char* argv[] = {"/bin/sh", "-c", as_owner.c_str(), nullptr};
  pid_t pid = -1;
  int status = -1;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) == 0) {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("failed: " + command + "\n" + read_file(folder_ + "/initdb.log") +
                             read_file(folder_ + "/server.log"));
  }
}

void PostgresCluster::start() {
  for (int attempt = 0;; ++attempt) {
    if (port_ == 0 || attempt > 0) port_ = free_loopback_port();
    try {
      run("'" + bin_ + "/pg_ctl' -D '" + folder_ + "/data' -l '" + folder_ +
          "/server.log' -o '-p " + std::to_string(port_) + "' -w -t 60 start > '" + folder_ +
          "/pg_ctl.log' 2>&1");
      running_ = true;
      return;
    } catch (...) {
      if (attempt == 2) throw;  // a port taken meanwhile: try another
    }
  }
}

void PostgresCluster::stop() {
  run("'" + bin_ + "/pg_ctl' -D '" + folder_ + "/data' -m fast -w stop >> '" + folder_ +
      "/pg_ctl.log' 2>&1");
  running_ = false;
}

std::string PostgresCluster::url(const std::string& database, const std::string& extra) const {
  return "postgresql:///" + database + "?host=" + folder_ + "&port=" + std::to_string(port_) +
         "&user=postgres" + extra;
}

std::string PostgresCluster::tcp_url(const std::string& database, const std::string& user,
                                     const std::string& extra) const {
  return "postgresql://" + user + "@127.0.0.1:" + std::to_string(port_) + "/" + database +
         "?sslmode=disable" + extra;
}

void PostgresCluster::execute(const std::string& database, const std::string& sql) const {
  storage::pg::Connection connection(storage::DatabaseUrl::parse(url(database)).conninfo, "",
                                     "test cluster");
  connection.exec(sql.c_str());
}

std::string PostgresCluster::create_database() {
  const std::string name = "kms_test_" + std::to_string(++next_database_);
  execute("postgres", "CREATE DATABASE " + name);
  return url(name);
}

}  // namespace testsupport
