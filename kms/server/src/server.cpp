#include "kms/server/server.h"

#include <openssl/rand.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <csignal>
#include <thread>
#include <unordered_map>

#include "hsm/error.h"
#include "kms/core/error_status.h"
#include "kms/server/service_notify.h"
#include "kms/server/tls.h"
#include "kms/server/wire.h"

namespace kms::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr std::string_view kKeyRequestPath = "/v1/key-request";
constexpr std::string_view kBridgeKeysPath = "/v1/bridge/keys";

struct Reply {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string outcome = "ok";
};

Reply error_reply(unsigned status, std::string_view code, std::string_view detail) {
  return {status, "application/json", wire::error_to_json(code, detail), std::string(code)};
}

std::size_t threads_or_default(std::size_t configured) {
  if (configured > 0) return configured;
  return std::max<std::size_t>(2, std::thread::hardware_concurrency());
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  RAND_bytes(buffer.data(), static_cast<int>(buffer.size()));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : buffer) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string hex(const Bytes& data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const auto b : data) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

bool is_json_content_type(std::string_view value) {
  const auto semicolon = value.find(';');
  if (semicolon != std::string_view::npos) value = value.substr(0, semicolon);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  return beast::iequals(value, "application/json");
}

// Maps every exception a job can throw to a reply with a stable code.
Reply guarded(const std::function<Reply()>& job, Logger& logger, const std::string& request_id) {
  try {
    return job();
  } catch (const ProtocolError& error) {
    // A fault of the server's own side is logged with its diagnostic (PKCS#11 call and CKR,
    // database error); the client gets the stable code and a fixed detail only.
    if (!error.diagnostic().empty()) {
      const bool fault = error.code() == ErrorCode::token_unavailable ||
                         error.code() == ErrorCode::internal_error ||
                         error.code() == ErrorCode::audit_unavailable;
      const LogFields fields{{"id", request_id},
                             {"code", std::string(error_code_name(error.code()))},
                             {"error", error.diagnostic()}};
      if (fault) {
        logger.error("request failed on the server side", fields);
      } else {
        logger.warn("request refused", fields);
      }
    }
    return error_reply(http_status_for(error.code()), error_code_name(error.code()),
                       error.detail());
  } catch (const AuditUnavailable& error) {
    logger.error("audit log unavailable: nothing released",
                 {{"id", request_id}, {"error", error.what()}});
    return error_reply(503, "audit_unavailable",
                       "the audit log cannot be written; nothing was released");
  } catch (const hsm::Error& error) {
    logger.error("token call failed", {{"id", request_id},
                                       {"function", error.function()},
                                       {"rv", hsm::rv_name(error.rv())},
                                       {"error", error.what()}});
    return error_reply(503, "token_unavailable", "the token could not complete the request");
  } catch (const std::exception& error) {
    logger.error("internal error", {{"id", request_id}, {"error", error.what()}});
    return error_reply(500, "internal_error", "internal error; request id " + request_id);
  }
}

}  // namespace

unsigned http_status_for(ErrorCode code) {
  // One mapping for the whole project: kms_core's (docs/PROTOCOL.md, "Errors").
  return static_cast<unsigned>(kms::http_status(code));
}

class Connection;

struct Server::Impl {
  Impl(const Config& c, Backend b, Metrics& m, Logger& l)
      : config(c),
        backend(std::move(b)),
        metrics(m),
        logger(l),
        tls(TlsFiles{c.server.tls_cert, c.server.tls_key, c.server.bridge_ca,
                     c.server.tls_min_version}),
        id_prefix(random_hex(4)),
        acceptor(net::make_strand(ioc)),
        signals(ioc),
        retry_timer(acceptor.get_executor()),
        drain_timer(ioc),
        workers(threads_or_default(c.server.worker_threads)) {}

  void do_accept();
  void on_signal(const beast::error_code& ec, int signal);
  void wait_signal();
  void begin_drain();
  void poll_drain(Clock::time_point deadline);
  void reload();
  std::string next_request_id() {
    return id_prefix + "-" + std::to_string(request_counter.fetch_add(1) + 1);
  }

  Config config;
  Backend backend;
  Metrics& metrics;
  Logger& logger;
  TlsContextProvider tls;
  std::string id_prefix;
  std::atomic<std::uint64_t> request_counter{0};
  std::atomic<bool> draining{false};
  bool stopped = false;

  // Declared before the io_context: handlers it destroys may end connections, which
  // deregister here.
  std::mutex connections_mutex;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;

  net::io_context ioc;
  tcp::acceptor acceptor;
  net::signal_set signals;
  net::steady_timer retry_timer;
  net::steady_timer drain_timer;
  net::thread_pool workers;  // destroyed first: its jobs hold connections
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server::Impl& server, tcp::socket&& socket, std::shared_ptr<net::ssl::context> context)
      : server_(server), context_(std::move(context)), stream_(std::move(socket), *context_) {
    beast::error_code ec;
    const auto remote = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    peer_ = ec ? "unknown" : remote.address().to_string() + ":" + std::to_string(remote.port());
    ++server_.metrics.connections_open;
    ++server_.metrics.connections_accepted;
  }

  ~Connection() {
    --server_.metrics.connections_open;
    std::lock_guard lock(server_.connections_mutex);
    server_.connections.erase(this);
  }

  void start() {
    {
      std::lock_guard lock(server_.connections_mutex);
      server_.connections.emplace(this, weak_from_this());
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_handshake(); });
  }

  // Called (on this connection's strand) when the server starts draining.
  void on_drain() {
    if (!busy_) beast::get_lowest_layer(stream_).cancel();
  }

  auto executor() { return stream_.get_executor(); }

 private:
  void do_handshake() {
    beast::get_lowest_layer(stream_).expires_after(server_.config.limits.handshake_timeout);
    stream_.async_handshake(
        net::ssl::stream_base::server,
        [self = shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
  }

  void on_handshake(beast::error_code ec) {
    if (ec) {
      if (ec == beast::error::timeout) {
        ++server_.metrics.timeouts;
      } else if (ec != net::error::operation_aborted) {
        ++server_.metrics.tls_handshake_failures;
      }
      server_.logger.log(LogLevel::debug, "tls handshake failed",
                         {{"peer", peer_}, {"error", ec.message()}});
      return close_now();
    }
    do_read();
  }

  void do_read() {
    if (server_.draining) return do_shutdown();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.config.limits.max_header_bytes));
    parser_->body_limit(server_.config.limits.max_body_bytes);
    // Bounds the wait for a request and the whole of its transfer: a client trickling
    // header bytes (slowloris) is cut off when it expires.
    beast::get_lowest_layer(stream_).expires_after(server_.config.limits.read_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    started_ = Clock::now();
    endpoint_ = "other";
    request_ = {};
    request_id_ = server_.next_request_id();
    if (ec == http::error::end_of_stream || ec == net::ssl::error::stream_truncated) {
      return do_shutdown();
    }
    if (ec == beast::error::timeout) {
      ++server_.metrics.timeouts;
      return close_now();
    }
    if (ec == http::error::body_limit) {
      close_after_ = true;
      return send(error_reply(
          413, "malformed_request",
          "body larger than " + std::to_string(server_.config.limits.max_body_bytes) + " bytes"));
    }
    if (ec == http::error::header_limit) {
      close_after_ = true;
      return send(error_reply(431, "malformed_request",
                              "header larger than " +
                                  std::to_string(server_.config.limits.max_header_bytes) +
                                  " bytes"));
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category()) {
      close_after_ = true;
      return send(
          error_reply(400, "malformed_request", "not an HTTP/1.1 request: " + ec.message()));
    }
    if (ec) return close_now();  // reset, TLS error, cancelled by the drain
    busy_ = true;
    request_ = parser_->release();
    route();
  }

  void route() {
    std::string_view path(request_.target().data(), request_.target().size());
    if (const auto query = path.find('?'); query != std::string_view::npos) {
      path = path.substr(0, query);
    }
    const auto method = request_.method();
    const auto require = [&](http::verb verb, std::string_view allowed) {
      if (method == verb) return true;
      allow_ = std::string(allowed);
      send(error_reply(405, "malformed_request", "method not allowed; use " + allow_));
      return false;
    };
    if (path == "/healthz") {
      endpoint_ = "healthz";
      if (require(http::verb::get, "GET"))
        send({200, "application/json", R"({"status":"ok"})", "ok"});
    } else if (path == "/readyz") {
      endpoint_ = "readyz";
      if (require(http::verb::get, "GET"))
        run_on_worker([&server = server_] { return readiness(server); });
    } else if (path == "/metrics") {
      endpoint_ = "metrics";
      if (require(http::verb::get, "GET")) {
        send({200, "text/plain; version=0.0.4; charset=utf-8", server_.metrics.render(), "ok"});
      }
    } else if (path == kKeyRequestPath) {
      endpoint_ = "key_request";
      if (require(http::verb::post, "POST") && require_json()) key_request();
    } else if (path == kBridgeKeysPath) {
      endpoint_ = "bridge_keys";
      if (require(http::verb::post, "POST") && require_json()) bridge_keys();
    } else {
      send(error_reply(404, "malformed_request", "no such endpoint"));
    }
  }

  bool require_json() {
    if (is_json_content_type(request_[http::field::content_type])) return true;
    send(error_reply(415, "malformed_request", "Content-Type must be application/json"));
    return false;
  }

  static Reply readiness(Server::Impl& server) {
    if (server.draining) {
      return error_reply(503, "overloaded", "draining: the server is shutting down");
    }
    if (server.backend.ready && !server.backend.ready()) {
      return error_reply(503, "token_unavailable", "the token is not reachable or not logged in");
    }
    return {200, "application/json", R"({"status":"ready"})", "ok"};
  }

  void key_request() {
    RequestContext context{peer_, request_id_};
    run_on_worker([&server = server_, body = std::move(request_.body()), context] {
      if (!server.backend.key_requests) {
        throw ProtocolError(ErrorCode::internal_error, "no key-request service configured");
      }
      const KeyRequest request = wire::key_request_from_json(body);
      const KeyResponse response = server.backend.key_requests->handle(request, context);
      return Reply{200, "application/json", wire::key_response_to_json(response), "ok"};
    });
  }

  void bridge_keys() {
    const BridgePeer peer = check_bridge_peer(stream_.native_handle());
    RequestContext context{peer_, request_id_};
    bridge_ = peer.identity;
    if (!peer.authenticated) {
      // Refused before the service sees it: the server audits this refusal itself.
      run_on_worker([&server = server_, peer, context, body = std::move(request_.body())] {
        AuditEvent refusal{"refusal",
                           "bridge_not_authorized",
                           {{"endpoint", std::string(kBridgeKeysPath)},
                            {"peer", context.peer},
                            {"request_id", context.request_id},
                            {"reason", peer.problem},
                            {"cert_subject", peer.subject},
                            {"cert_issuer", peer.issuer}}};
        try {  // name the conference asked for, when the body says
          refusal.fields["conference"] = hex(wire::bridge_request_from_json(body));
        } catch (const ProtocolError&) {
        }
        try {
          if (server.backend.audit) server.backend.audit->record(refusal);
        } catch (const AuditUnavailable& error) {
          server.logger.error("audit log unavailable for a refusal",
                              {{"id", context.request_id}, {"error", error.what()}});
        }
        return error_reply(403, "bridge_not_authorized",
                           "mutual TLS required with a bridge certificate: " + peer.problem);
      });
      return;
    }
    run_on_worker([&server = server_, body = std::move(request_.body()), context,
                   identity = peer.identity] {
      if (!server.backend.bridges) {
        throw ProtocolError(ErrorCode::internal_error, "no bridge service configured");
      }
      const Bytes conference = wire::bridge_request_from_json(body);
      const BridgeRelease release = server.backend.bridges->release(identity, conference, context);
      return Reply{200, "application/json", wire::bridge_release_to_json(release), "ok"};
    });
  }

  // Runs job on the worker pool (token calls, audit fsync) and sends its reply from this
  // connection's strand. Beyond max_pending_requests queued jobs: 503 at once.
  template <class Job>
  void run_on_worker(Job job) {
    auto& pending = server_.metrics.pending_requests;
    if (pending.fetch_add(1) >=
        static_cast<std::int64_t>(server_.config.limits.max_pending_requests)) {
      --pending;
      return send(error_reply(503, "overloaded", "too many requests in progress; retry"));
    }
    net::post(server_.workers, [self = shared_from_this(), job = std::move(job)]() mutable {
      Reply reply = guarded(job, self->server_.logger, self->request_id_);
      --self->server_.metrics.pending_requests;
      net::post(self->stream_.get_executor(),
                [self, reply = std::move(reply)]() mutable { self->send(std::move(reply)); });
    });
  }

  void send(Reply reply) {
    busy_ = true;  // a response being written is finished even when a drain starts
    const auto elapsed = Clock::now() - started_;
    response_.emplace(static_cast<http::status>(reply.status),
                      request_.version() ? request_.version() : 11);
    response_->set(http::field::server, "kmsd");
    response_->set(http::field::content_type, reply.content_type);
    response_->set(http::field::cache_control, "no-store");
    response_->set("X-Request-Id", request_id_);
    if (!allow_.empty()) response_->set(http::field::allow, allow_);
    // Every 503 (overloaded from the queue, session pool, database, replay record or a
    // drain; token_unavailable; audit_unavailable) is worth retrying: docs/SERVER.md "Errors".
    if (reply.status == 503) response_->set(http::field::retry_after, "1");
    const bool keep_alive = !close_after_ && !server_.draining && request_.keep_alive();
    response_->keep_alive(keep_alive);
    response_->body() = std::move(reply.body);
    response_->prepare_payload();

    server_.metrics.request_done(endpoint_, reply.status, reply.outcome, elapsed);
    LogFields fields{
        {"id", request_id_},
        {"peer", peer_},
        {"method", std::string(request_.method_string())},
        {"path", std::string(request_.target().substr(0, 128))},
        {"status", std::to_string(reply.status)},
        {"outcome", reply.outcome},
        {"ms", std::to_string(std::chrono::duration<double, std::milli>(elapsed).count())}};
    if (!bridge_.empty()) fields.emplace_back("bridge", bridge_);
    server_.logger.info("request", fields);

    beast::get_lowest_layer(stream_).expires_after(server_.config.limits.write_timeout);
    http::async_write(stream_, *response_,
                      [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                        self->on_write(ec, keep_alive);
                      });
  }

  void on_write(beast::error_code ec, bool keep_alive) {
    busy_ = false;
    allow_.clear();
    bridge_.clear();
    response_.reset();
    if (ec) {
      if (ec == beast::error::timeout) ++server_.metrics.timeouts;
      return close_now();
    }
    if (!keep_alive) return do_shutdown();
    do_read();
  }

  void do_shutdown() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
    stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->close_now(); });
  }

  void close_now() {
    beast::error_code ignored;
    auto& socket = beast::get_lowest_layer(stream_).socket();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  Server::Impl& server_;
  std::shared_ptr<net::ssl::context> context_;  // kept alive for the stream
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request request_;
  std::optional<Response> response_;
  std::string peer_;
  std::string request_id_;
  std::string endpoint_ = "other";
  std::string bridge_;
  std::string allow_;
  Clock::time_point started_ = Clock::now();
  bool busy_ = false;
  bool close_after_ = false;
};

void Server::Impl::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // EMFILE and friends: back off instead of spinning, keep serving open connections.
      logger.warn("accept failed", {{"error", ec.message()}});
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !draining) do_accept();
      });
      return;
    }
    if (metrics.connections_open.load() >=
        static_cast<std::int64_t>(config.limits.max_connections)) {
      ++metrics.connections_rejected;
      beast::error_code ignored;
      socket.set_option(net::socket_base::linger(true, 0), ignored);  // RST, no TIME_WAIT
      socket.close(ignored);
    } else {
      std::make_shared<Connection>(*this, std::move(socket), tls.current())->start();
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
  if (!draining) notify_service_manager(reloading_notification());
  const std::string problem = tls.reload();
  if (problem.empty()) {
    ++metrics.certificate_reloads;
    logger.info("certificates reloaded", {{"cert", config.server.tls_cert.string()},
                                          {"bridge_ca", config.server.bridge_ca.string()}});
  } else {
    ++metrics.certificate_reload_failures;
    logger.error("certificate reload failed; keeping the current ones", {{"error", problem}});
  }
  if (!draining) notify_service_manager("READY=1");
}

void Server::Impl::begin_drain() {
  if (draining.exchange(true)) return;
  notify_service_manager("STOPPING=1");
  net::post(acceptor.get_executor(), [this] {
    beast::error_code ignored;
    acceptor.close(ignored);
    retry_timer.cancel();
  });
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(connections_mutex);
    for (auto& [raw, weak] : connections) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  for (auto& connection : open) {
    net::post(connection->executor(), [connection] { connection->on_drain(); });
  }
  poll_drain(Clock::now() + config.server.drain_timeout);
}

void Server::Impl::poll_drain(Clock::time_point deadline) {
  if (metrics.connections_open.load() == 0 && metrics.pending_requests.load() == 0) {
    logger.info("drained");
    signals.cancel();
    ioc.stop();
    return;
  }
  if (Clock::now() >= deadline) {
    logger.warn("drain timeout: closing the remaining connections",
                {{"connections", std::to_string(metrics.connections_open.load())}});
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
    impl_->signals.add(SIGTERM);
    impl_->signals.add(SIGINT);
    impl_->signals.add(SIGHUP);
    impl_->wait_signal();
  }
}

Server::~Server() { impl_->workers.join(); }

std::uint16_t Server::listen() {
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
