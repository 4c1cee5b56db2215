// kmsd's HTTPS server: Boost.Beast HTTP/1.1 with keep-alive over TLS on a pool of I/O
// threads; every token-touching call (the services, /readyz) runs on a separate worker
// pool, so a slow token call never stalls the I/O threads. Limits (connections in all and
// per source address, connections still in their TLS handshake in all and per source,
// header and body size, handshake/read/write timeouts, queued requests) bound what a client
// can hold; a connection that has completed its handshake is never displaced by new ones
// (docs/SERVER.md, "Connection limits").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kms/server/config.h"
#include "kms/server/logger.h"
#include "kms/server/metrics.h"
#include "kms/server/route.h"

namespace kms::server {

// What the server serves: its routes (each handler holds the services it calls; none is
// owned by the server), and how the server can tell that the token hangs.
struct Backend {
  std::vector<Route> routes;
  std::function<void()> reopen_logs;  // SIGHUP: reopen the audit log (logrotate; I/O thread)
  // How long the longest token call now in progress has been running (no token call; runs
  // on an I/O thread): beyond limits.token_stall the token counts as hung, and every
  // request that needs a worker is answered 503 token_unavailable at once.
  std::function<std::chrono::nanoseconds()> oldest_token_call;
  // Sessions the token pool holds at most (after the token's own limit): with
  // limits.max_in_flight_per_session, the bound on requests in flight. 0: token.max_sessions.
  std::size_t token_sessions = 0;
};

class Server {
 public:
  // handle_signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the TLS files and calls
  // backend.reopen_logs (caught
  // from construction on, so a signal that arrives during start-up is not lost).
  Server(const Config& config, Backend backend, Metrics& metrics, Logger& logger,
         bool handle_signals = true);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens; returns the bound port (useful with port 0). Throws on failure.
  // Also raises the soft RLIMIT_NOFILE to the hard limit (and logs both), so that the
  // connection limits, not the descriptor limit, decide who gets in.
  std::uint16_t listen();
  // Serves until SIGTERM/SIGINT (when handle_signals) or stop(), then drains in-flight
  // requests (up to drain_timeout) and returns.
  void run();
  void stop();                 // thread-safe: begin the drain
  void reload_certificates();  // thread-safe

  struct Impl;  // server.cpp only

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kms::server
