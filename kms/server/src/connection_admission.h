// Who may hold a connection (docs/SERVER.md, "Connection limits"). Every open connection
// counts against max_connections and against its source's max_connections_per_source; one
// that has not completed its TLS handshake also against max_handshakes and its source's
// max_handshakes_per_source. A new connection never displaces one that has completed its
// handshake: when a budget is full it displaces the oldest unfinished handshake (its own
// source's when that source's budget is full, else one of the source that holds the most
// unfinished handshakes), and it is refused only when every connection in its way has
// completed its handshake. So idle or slow connections that never finish TLS cannot lock
// out anyone who does, and one source cannot take the slots of another.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "kms/server/config.h"
#include "kms/server/metrics.h"

namespace kms::server {

class Connection;

// The key a connection's source is counted under: the IPv4 address (also when it arrives
// IPv4-mapped), or the /64 an IPv6 address lies in (one host usually holds a whole /64).
std::string source_key(const boost::asio::ip::address& address);

class ConnectionAdmission {
 public:
  enum class Verdict { admitted, refused, refused_per_source };
  struct Decision {
    Verdict verdict = Verdict::refused;
    std::uint64_t ticket = 0;                        // when admitted
    std::vector<std::weak_ptr<Connection>> evicted;  // to close: displaced handshakes
  };

  ConnectionAdmission(const Limits& limits, Metrics& metrics);

  // Called for each accepted socket, in accept order (on the acceptor's strand).
  Decision admit(const std::string& source);
  void attach(std::uint64_t ticket, std::weak_ptr<Connection> connection);
  // The handshake completed: false if the connection was displaced meanwhile (close it).
  bool established(std::uint64_t ticket);
  // The connection is closed (idempotent; nothing if it was displaced).
  void release(std::uint64_t ticket);

 private:
  struct Budgets {
    std::size_t connections, handshakes, per_source, handshakes_per_source;
  };
  struct Entry {
    std::string source;
    bool handshaking = true;
    std::weak_ptr<Connection> connection;
  };
  struct Source {
    std::size_t total = 0;
    std::set<std::uint64_t> handshaking;  // tickets grow with accept order: oldest first
  };

  void forget(std::unordered_map<std::uint64_t, Entry>::iterator it);
  std::weak_ptr<Connection> evict(std::uint64_t ticket);
  std::uint64_t heaviest_oldest_handshake() const;

  Metrics& metrics_;
  Budgets budgets_{};
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> entries_;
  std::unordered_map<std::string, Source> sources_;
  std::size_t open_ = 0;
  std::size_t handshaking_ = 0;
  std::uint64_t last_ticket_ = 0;
};

}  // namespace kms::server
