// A real PostgreSQL server for tests, made fresh in a temporary folder: initdb, then pg_ctl
// start listening on a unix socket in that folder and a free loopback port (as the postgres
// user when the tests run as root: initdb refuses root). Stopped and removed by the
// destructor, which also runs when a test fails; shared() keeps one per test process.
// No mock: the registry and key-database tests run against this server.
#pragma once

#include <memory>
#include <optional>
#include <string>

namespace testsupport {

class PostgresCluster {
 public:
  // The folder with initdb / pg_ctl, or nullopt when PostgreSQL is not installed (tests
  // then skip, saying so; scripts/setup installs it).
  static std::optional<std::string> binaries();
  static std::string missing_message();

  PostgresCluster();  // throws std::runtime_error with the server's log on failure
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // One cluster for the whole test process (started on first use).
  static PostgresCluster& shared();

  // A new empty database; returns its URL (unix socket, superuser, no password).
  std::string create_database();
  // The URL of `database` over the unix socket, with extra query parameters ("&a=b").
  std::string url(const std::string& database, const std::string& extra = "") const;
  // The URL of `database` over TCP on 127.0.0.1 as `user` (password authentication).
  std::string tcp_url(const std::string& database, const std::string& user,
                      const std::string& extra = "") const;
  // Runs SQL as the superuser in `database`.
  void execute(const std::string& database, const std::string& sql) const;

  void stop();   // fast shutdown: clients are disconnected
  void start();  // again, same folder and port
  bool running() const noexcept { return running_; }
  int port() const noexcept { return port_; }
  const std::string& folder() const noexcept { return folder_; }

 private:
  void run(const std::string& command) const;  // as the cluster's owner; throws with the log
  std::string bin_;
  std::string folder_;
  int port_ = 0;
  bool running_ = false;
  int next_database_ = 0;
};

}  // namespace testsupport
