// The server's lifecycle: listen, accept (through the connection budgets), SIGHUP
// certificate reloads, and the drain at SIGTERM / SIGINT / stop(). What a connection does
// is connection.cpp; what a request does is its route's handler (routes.cpp).
#include "kms/server/server.h"

#include <openssl/rand.h>
#include <sys/resource.h>

#include <boost/asio.hpp>
#include <csignal>
#include <thread>

#include "connection.h"
#include "kms/hex.h"
#include "kms/server/service_notify.h"
#include "kms/server/tls.h"
#include "server_core.h"

namespace kms::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

std::size_t threads_or_default(std::size_t configured) {
  if (configured > 0) return configured;
  return std::max<std::size_t>(2, std::thread::hardware_concurrency());
}

// Workers spend much of a request waiting (for a group commit to become durable, for the
// token), not computing: four per hardware thread. Measured (docs/BENCHMARKS.md, "Worker
// threads"): on 2 CPUs, 8 workers gave 1.5x (SoftHSM) and 2.2x (NSS) the throughput of 2,
// and 16 no more than 8.
std::size_t workers_or_default(std::size_t configured) {
  if (configured > 0) return configured;
  return 4 * threads_or_default(0);
}

AdmissionSettings admission_settings(const Config& config, std::size_t token_sessions) {
  const Limits& limits = config.limits;
  if (token_sessions == 0) token_sessions = config.token.max_sessions;
  AdmissionSettings settings;
  settings.requests_per_second = static_cast<std::uint32_t>(limits.requests_per_second_per_source);
  settings.burst = static_cast<std::uint32_t>(limits.request_burst_per_source);
  settings.max_in_flight =
      std::min(limits.max_pending_requests,
               limits.max_in_flight_per_session * std::max<std::size_t>(1, token_sessions));
  settings.tracked_sources = limits.rate_limit_sources;
  return settings;
}

std::string random_hex(std::size_t bytes) {
  std::vector<std::uint8_t> buffer(bytes);
  RAND_bytes(buffer.data(), static_cast<int>(buffer.size()));
  return to_hex(buffer);
}

// Raises the soft RLIMIT_NOFILE to the hard one: with the common default of 1024, accept()
// would fail with EMFILE before max_connections is reached.
void raise_descriptor_limit(const Limits& limits, Logger& logger) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  logger.info("file descriptor limit", {{"soft", std::to_string(limit.rlim_cur)},
                                        {"was", std::to_string(before)},
                                        {"hard", std::to_string(limit.rlim_max)}});
  // Every connection is a descriptor; the token, the databases, the audit log, the
  // listener and the event loop need a few dozen more.
  const rlim_t needed = static_cast<rlim_t>(limits.max_connections) + 64;
  if (limit.rlim_cur < needed) {
    logger.warn(
        "file descriptor limit below what limits.max_connections needs; raise the hard "
        "limit (LimitNOFILE=) or lower max_connections",
        {{"limit", std::to_string(limit.rlim_cur)}, {"needed", std::to_string(needed)}});
  }
}

}  // namespace

ServerCore::ServerCore(const Config& c, Backend backend, Metrics& m, Logger& l,
                       net::thread_pool& pool)
    : config(c),
      router(std::move(backend.routes)),
      metrics(m),
      logger(l),
      admission(c.limits, m),
      request_admission(admission_settings(c, backend.token_sessions), m),
      workers(pool),
      reopen_logs(std::move(backend.reopen_logs)),
      oldest_token_call_(std::move(backend.oldest_token_call)),
      id_prefix_(random_hex(4)) {}

bool ServerCore::token_stalled() const {
  return oldest_token_call_ && oldest_token_call_() > config.limits.token_stall;
}

std::string ServerCore::next_request_id() {
  return id_prefix_ + "-" + std::to_string(request_counter_.fetch_add(1) + 1);
}

struct Server::Impl {
  Impl(const Config& c, Backend b, Metrics& m, Logger& l)
      : core(c, std::move(b), m, l, workers),
        tls(TlsFiles{c.server.tls_cert, c.server.tls_key, c.server.bridge_ca,
                     c.server.tls_min_version}),
        acceptor(net::make_strand(ioc)),
        signals(ioc),
        retry_timer(acceptor.get_executor()),
        drain_timer(ioc),
        workers(workers_or_default(c.server.worker_threads)) {}

  void do_accept();
  void on_signal(const beast::error_code& ec, int signal);
  void wait_signal();
  void begin_drain();
  void poll_drain(Clock::time_point deadline);
  void reload();

  // Declared before the io_context: handlers it destroys may end connections, which
  // deregister in the core.
  ServerCore core;
  const Config& config = core.config;
  Metrics& metrics = core.metrics;
  Logger& logger = core.logger;
  TlsContextProvider tls;

  net::io_context ioc;
  tcp::acceptor acceptor;
  net::signal_set signals;
  net::steady_timer retry_timer;
  net::steady_timer drain_timer;
  net::thread_pool workers;  // destroyed first: its jobs hold connections
};

void Server::Impl::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // EMFILE and friends: back off instead of spinning, keep serving open connections.
      logger.warn("accept failed", {{"error", ec.message()}});
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !core.draining()) do_accept();
      });
      return;
    }
    beast::error_code endpoint_ec;
    const tcp::endpoint remote = socket.remote_endpoint(endpoint_ec);
    ConnectionAdmission::Decision decision;
    if (!endpoint_ec) decision = core.admission.admit(source_key(remote.address()));
    for (const auto& weak : decision.evicted) {
      if (auto evicted = weak.lock()) {
        net::post(evicted->executor(), [evicted] { evicted->on_evicted(); });
      }
    }
    if (decision.verdict == ConnectionAdmission::Verdict::admitted) {
      auto connection = std::make_shared<Connection>(core, std::move(socket), remote,
                                                     decision.ticket, tls.current());
      core.admission.attach(decision.ticket, connection);
      connection->start();
    } else {  // every connection in the way has completed its handshake (or the peer is gone)
      ++metrics.connections_rejected;
      beast::error_code ignored;
      socket.set_option(net::socket_base::linger(true, 0), ignored);  // RST, no TIME_WAIT
      socket.close(ignored);
    }
    do_accept();
  });
}

void Server::Impl::wait_signal() {
  signals.async_wait([this](beast::error_code ec, int signal) { on_signal(ec, signal); });
}

void Server::Impl::on_signal(const beast::error_code& ec, int signal) {
  if (ec) return;
  if (signal == SIGHUP) {
    reload();
    wait_signal();
    return;
  }
  logger.info("signal received: draining", {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"}});
  begin_drain();
}

void Server::Impl::reload() {
  // systemd: reloading until READY=1 (not while draining: STOPPING=1 was sent).
  if (!core.draining()) notify_service_manager(reloading_notification());
  const std::string problem = tls.reload();
  if (problem.empty()) {
    ++metrics.certificate_reloads;
    logger.info("certificates reloaded", {{"cert", config.server.tls_cert.string()},
                                          {"bridge_ca", config.server.bridge_ca.string()}});
  } else {
    ++metrics.certificate_reload_failures;
    logger.error("certificate reload failed; keeping the current ones", {{"error", problem}});
  }
  if (core.reopen_logs) core.reopen_logs();
  if (!core.draining()) notify_service_manager("READY=1");
}

void Server::Impl::begin_drain() {
  if (!core.begin_draining()) return;
  notify_service_manager("STOPPING=1");
  net::post(acceptor.get_executor(), [this] {
    beast::error_code ignored;
    acceptor.close(ignored);
    retry_timer.cancel();
  });
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(core.connections_mutex);
    for (auto& [raw, weak] : core.connections) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  for (auto& connection : open) {
    net::post(connection->executor(), [connection] { connection->on_drain(); });
  }
  poll_drain(Clock::now() + config.server.drain_timeout);
}

void Server::Impl::poll_drain(Clock::time_point deadline) {
  if (metrics.connection_objects.load() == 0 && metrics.pending_requests.load() == 0) {
    logger.info("drained");
    signals.cancel();
    ioc.stop();
    return;
  }
  if (Clock::now() >= deadline) {
    logger.warn("drain timeout: closing the remaining connections",
                {{"connections", std::to_string(metrics.connection_objects.load())}});
    signals.cancel();
    ioc.stop();
    return;
  }
  drain_timer.expires_after(std::chrono::milliseconds(20));
  drain_timer.async_wait([this, deadline](beast::error_code ec) {
    if (!ec) poll_drain(deadline);
  });
}

Server::Server(const Config& config, Backend backend, Metrics& metrics, Logger& logger,
               bool handle_signals)
    : impl_(std::make_unique<Impl>(config, std::move(backend), metrics, logger)) {
  if (handle_signals) {
    // A file-size limit (RLIMIT_FSIZE) makes the write fail with EFBIG (the audit log then
    // fails closed and resumes later) instead of killing the process.
    std::signal(SIGXFSZ, SIG_IGN);
    impl_->signals.add(SIGTERM);
    impl_->signals.add(SIGINT);
    impl_->signals.add(SIGHUP);
    impl_->wait_signal();
  }
}

Server::~Server() { impl_->workers.join(); }

std::uint16_t Server::listen() {
  raise_descriptor_limit(impl_->config.limits, impl_->logger);
  auto& acceptor = impl_->acceptor;
  const auto address = net::ip::make_address(impl_->config.server.listen_address);
  const tcp::endpoint endpoint(address, impl_->config.server.listen_port);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(net::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(net::socket_base::max_listen_connections);
  return acceptor.local_endpoint().port();
}

void Server::run() {
  Impl& impl = *impl_;
  net::post(impl.acceptor.get_executor(), [&impl] { impl.do_accept(); });
  const std::size_t io_threads = threads_or_default(impl.config.server.io_threads);
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < io_threads; ++i) threads.emplace_back([&impl] { impl.ioc.run(); });
  impl.ioc.run();
  for (auto& thread : threads) thread.join();
  impl.workers.join();
}

void Server::stop() {
  net::post(impl_->ioc, [impl = impl_.get()] { impl->begin_drain(); });
}

void Server::reload_certificates() {
  net::post(impl_->ioc, [impl = impl_.get()] { impl->reload(); });
}

}  // namespace kms::server
