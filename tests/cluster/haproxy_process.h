// A real HAProxy (Debian package) in front of kmsd nodes for the multi-node tests: TCP mode,
// TLS passed through (mutual TLS still ends at kmsd), every node health-checked over TLS on
// GET /readyz, the runtime API on a unix socket to read what the balancer thinks of a node.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kmstest {

struct BalancedNode {
  std::string name;  // HAProxy server name, e.g. "node1"
  std::uint16_t port = 0;
};

class HaproxyProcess {
 public:
  // Writes dir/haproxy.cfg and starts `haproxy -db -f dir/haproxy.cfg` on a free loopback
  // port; health checks verify kmsd's certificate against `server_ca` (name "localhost").
  // Throws std::runtime_error with HAProxy's output if it does not start.
  HaproxyProcess(const std::string& dir, const std::vector<BalancedNode>& nodes,
                 const std::string& server_ca);
  ~HaproxyProcess();
  HaproxyProcess(const HaproxyProcess&) = delete;
  HaproxyProcess& operator=(const HaproxyProcess&) = delete;

  std::uint16_t port() const { return port_; }
  // "UP", "DOWN", "NOLB", ... as the runtime API's `show stat` reports the node.
  std::string node_status(const std::string& name) const;
  // Waits (kPatience) until the node's status is exactly `status` ("UP", "DOWN").
  bool wait_for_status(const std::string& name, const std::string& status) const;
  std::string log() const;
  // Whether `haproxy` is installed (scripts/setup installs it).
  static bool available();

 private:
  std::string runtime_command(const std::string& command) const;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string socket_path_;
  std::string log_path_;
};

}  // namespace kmstest
