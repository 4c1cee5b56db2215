// kmsd under systemd (docs/SERVER.md "Running under systemd", packaging/kmsd.service):
// - the service notification protocol on $NOTIFY_SOCKET (a path or an abstract "@name"):
//   READY=1 once the listener is bound (its STATUS names the bound port), RELOADING=1 with
//   MONOTONIC_USEC and then READY=1 around a SIGHUP reload, STOPPING=1 when SIGTERM starts
//   the drain;
// - journald priority prefixes (<3> error, <4> warn, <6> info, <7> debug) on every log line
//   with --log-priority-prefix always, none when $JOURNAL_STREAM is not stderr (auto).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "kmsd_fixture.h"
#include "kmsd_requests.h"

namespace kmstest {
namespace {

// The service manager's end: a datagram socket kmsd's NOTIFY_SOCKET names.
class NotifySocket {
 public:
  // `name`: a path, or "@name" for the abstract namespace.
  explicit NotifySocket(std::string name) : name_(std::move(name)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name_.data(), name_.size());
    if (name_[0] == '@') address.sun_path[0] = '\0';
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size() +
                                               (name_[0] == '@' ? 0 : 1));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0) {
      throw std::runtime_error("bind " + name_ + ": " + std::strerror(errno));
    }
  }
  ~NotifySocket() {
    ::close(fd_);
    if (name_[0] == '/') ::unlink(name_.c_str());
  }
  const std::string& name() const { return name_; }

  // The next datagram, or nullopt if none arrives within kPatience.
  std::optional<std::string> receive() const {
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(kPatience.count() * 1000));
    if (ready != 1) return std::nullopt;
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }

 private:
  std::string name_;
  int fd_ = -1;
};

std::uint64_t monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1000000u +
         static_cast<std::uint64_t>(now.tv_nsec) / 1000u;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class KmsdSystemdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { environment_ = KmsdEnvironment::create().release(); }
  static void TearDownTestSuite() {
    delete environment_;
    environment_ = nullptr;
  }
  static std::string config() { return environment_->dir() + "/kmsd.toml"; }
  static inline KmsdEnvironment* environment_ = nullptr;
};

TEST_F(KmsdSystemdTest, NotifiesReadyReloadingAndStopping) {
  NotifySocket manager(environment_->dir() + "/notify.sock");
  KmsdProcess kmsd(*environment_, config(), {}, {{"NOTIFY_SOCKET", manager.name()}});

  // READY=1 after the bind: its STATUS names the port the OS chose, and kmsd answers.
  const auto ready = manager.receive();
  ASSERT_TRUE(ready) << kmsd.log();
  EXPECT_EQ(*ready, "READY=1\nSTATUS=listening on 127.0.0.1:" + std::to_string(kmsd.port()));
  EXPECT_EQ(ue_connection(kmsd, environment_->pki())->get("/healthz").status, 200u);

  // SIGHUP: RELOADING=1 (with the CLOCK_MONOTONIC time systemd asks for), then READY=1.
  const std::uint64_t before = monotonic_usec();
  kmsd.signal(SIGHUP);
  const auto reloading = manager.receive();
  const std::uint64_t after = monotonic_usec();
  ASSERT_TRUE(reloading) << kmsd.log();
  std::smatch match;
  ASSERT_TRUE(std::regex_match(*reloading, match, std::regex("RELOADING=1\nMONOTONIC_USEC=(\\d+)")))
      << *reloading;
  const std::uint64_t stamp = std::stoull(match[1]);
  EXPECT_LE(before, stamp);
  EXPECT_LE(stamp, after);
  EXPECT_EQ(manager.receive().value_or("(nothing)"), "READY=1");
  EXPECT_TRUE(wait_until([&] {
    return kmsd.log().find("certificates reloaded") != std::string::npos;
  })) << kmsd.log();

  // SIGTERM: STOPPING=1 when the drain begins, and a clean exit.
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
  EXPECT_EQ(manager.receive().value_or("(nothing)"), "STOPPING=1");
}

TEST_F(KmsdSystemdTest, NotifiesAnAbstractSocket) {
  NotifySocket manager("@kms-test-notify-" + std::to_string(::getpid()));
  KmsdProcess kmsd(*environment_, config(), {}, {{"NOTIFY_SOCKET", manager.name()}});
  const auto ready = manager.receive();
  ASSERT_TRUE(ready) << kmsd.log();
  EXPECT_EQ(ready->substr(0, 8), "READY=1\n");
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
}

TEST_F(KmsdSystemdTest, AnUnusableNotifySocketChangesNothing) {
  // Nobody listens there: kmsd starts, serves and stops as without systemd.
  KmsdProcess kmsd(*environment_, config(), {},
                   {{"NOTIFY_SOCKET", environment_->dir() + "/nobody-listens.sock"}});
  EXPECT_EQ(ue_connection(kmsd, environment_->pki())->get("/healthz").status, 200u);
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
}

// The priority each line's prefix must carry, from its level= field.
std::string priority_for(const std::string& line) {
  if (line.find(" level=error ") != std::string::npos) return "<3>";
  if (line.find(" level=warn ") != std::string::npos) return "<4>";
  if (line.find(" level=info ") != std::string::npos) return "<6>";
  if (line.find(" level=debug ") != std::string::npos) return "<7>";
  return "(no level)";
}

TEST_F(KmsdSystemdTest, EveryLogLineCarriesTheJournalPriorityOfItsLevel) {
  // Its own copy of the server certificate, so that a SIGHUP can find it unusable.
  const std::string dir = environment_->dir() + "/priorities";
  std::filesystem::create_directories(dir);
  ConfigOverrides overrides;
  overrides.tls_cert = dir + "/server.crt";
  overrides.tls_key = dir + "/server.key";
  std::filesystem::copy_file(environment_->pki().server.cert, overrides.tls_cert);
  std::filesystem::copy_file(environment_->pki().server.key, overrides.tls_key);
  const std::string config = environment_->write_config("priorities.toml", overrides);
  KmsdProcess kmsd(*environment_, config, {"--log-priority-prefix", "always"});

  // A request (an info line), then a SIGHUP that cannot load the certificate (an error line).
  EXPECT_EQ(ue_connection(kmsd, environment_->pki())->get("/healthz").status, 200u);
  std::ofstream(overrides.tls_cert, std::ios::trunc) << "not a certificate\n";
  kmsd.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return kmsd.log().find("reload failed") != std::string::npos; }))
      << kmsd.log();
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();

  std::set<std::string> seen;
  for (const auto& line : lines_of(kmsd.log())) {
    SCOPED_TRACE(line);
    EXPECT_EQ(line.substr(0, 3), priority_for(line));
    EXPECT_EQ(line.substr(3, 5), "time=");
    seen.insert(line.substr(0, 3));
  }
  EXPECT_TRUE(seen.contains("<3>") && seen.contains("<6>")) << kmsd.log();
}

TEST_F(KmsdSystemdTest, NoPrefixWhenJournalStreamIsNotStderr) {
  // Inherited from a parent whose stderr was the journal: this stderr is a file.
  KmsdProcess kmsd(*environment_, config(), {}, {{"JOURNAL_STREAM", "1:1"}});
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
  const auto lines = lines_of(kmsd.log());
  ASSERT_FALSE(lines.empty());
  for (const auto& line : lines) EXPECT_EQ(line.substr(0, 5), "time=") << line;
}

TEST_F(KmsdSystemdTest, AnUnknownPrefixModeIsAUsageError) {
  const auto r = testsupport::run_command(
      {KMSD_BIN, "--config", config(), "--log-priority-prefix", "sometimes"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--log-priority-prefix"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kmstest
