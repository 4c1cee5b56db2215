#include "kms/server/server.h"

#include <openssl/rand.h>
#include <sys/resource.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <csignal>
#include <iterator>
#include <set>
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

// The key a connection's source is counted under: the IPv4 address (also when it arrives
// IPv4-mapped), or the /64 an IPv6 address lies in (one host usually holds a whole /64).
std::string source_key(const net::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  const net::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, v6).to_string();
  net::ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return net::ip::address_v6(bytes).to_string() + "/64";
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

unsigned http_status_for(ErrorCode code) {
  // One mapping for the whole project: kms_core's (docs/PROTOCOL.md, "Errors").
  return static_cast<unsigned>(kms::http_status(code));
}

class Connection;

// Who may hold a connection (docs/SERVER.md, "Connection limits"). Every open connection
// counts against max_connections and against its source's max_connections_per_source; one
// that has not completed its TLS handshake also against max_handshakes and its source's
// max_handshakes_per_source. A new connection never displaces one that has completed its
// handshake: when a budget is full it displaces the oldest unfinished handshake (its own
// source's when that source's budget is full, else one of the source that holds the most
// unfinished handshakes), and it is refused only when every connection in its way has
// completed its handshake. So idle or slow connections that never finish TLS cannot lock
// out anyone who does, and one source cannot take the slots of another.
class ConnectionAdmission {
 public:
  struct Budgets {
    std::size_t connections, handshakes, per_source, handshakes_per_source;
  };
  enum class Verdict { admitted, refused, refused_per_source };
  struct Decision {
    Verdict verdict = Verdict::refused;
    std::uint64_t ticket = 0;                        // when admitted
    std::vector<std::weak_ptr<Connection>> evicted;  // to close: displaced handshakes
  };

  ConnectionAdmission(const Limits& limits, Metrics& metrics) : metrics_(metrics) {
    // Each budget lies within the one above it.
    budgets_.connections = limits.max_connections;
    budgets_.handshakes = std::min(limits.max_handshakes, budgets_.connections);
    budgets_.per_source = std::min(limits.max_connections_per_source, budgets_.connections);
    budgets_.handshakes_per_source =
        std::min({limits.max_handshakes_per_source, budgets_.per_source, budgets_.handshakes});
  }

  // Called for each accepted socket, in accept order (on the acceptor's strand).
  Decision admit(const std::string& source) {
    std::lock_guard lock(mutex_);
    Decision decision;
    {
      const auto it = sources_.find(source);
      if (it != sources_.end() &&
          (it->second.total >= budgets_.per_source ||
           it->second.handshaking.size() >= budgets_.handshakes_per_source)) {
        if (it->second.handshaking.empty()) {
          ++metrics_.connections_rejected_per_source;
          decision.verdict = Verdict::refused_per_source;
          return decision;
        }
        decision.evicted.push_back(evict(*it->second.handshaking.begin()));
      }
    }
    if (open_ >= budgets_.connections || handshaking_ >= budgets_.handshakes) {
      if (handshaking_ == 0) {
        decision.verdict = Verdict::refused;
        return decision;
      }
      decision.evicted.push_back(evict(heaviest_oldest_handshake()));
    }
    decision.verdict = Verdict::admitted;
    decision.ticket = ++last_ticket_;
    Source& counted = sources_[source];
    ++counted.total;
    counted.handshaking.insert(decision.ticket);
    entries_.emplace(decision.ticket, Entry{source, true, {}});
    ++open_;
    ++handshaking_;
    metrics_.connections_handshaking = static_cast<std::int64_t>(handshaking_);
    return decision;
  }

  void attach(std::uint64_t ticket, std::weak_ptr<Connection> connection) {
    std::lock_guard lock(mutex_);
    if (const auto it = entries_.find(ticket); it != entries_.end()) {
      it->second.connection = std::move(connection);
    }
  }

  // The handshake completed: false if the connection was displaced meanwhile (close it).
  bool established(std::uint64_t ticket) {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(ticket);
    if (it == entries_.end()) return false;
    if (it->second.handshaking) {
      it->second.handshaking = false;
      sources_[it->second.source].handshaking.erase(ticket);
      --handshaking_;
      metrics_.connections_handshaking = static_cast<std::int64_t>(handshaking_);
    }
    return true;
  }

  // The connection is closed (idempotent; nothing if it was displaced).
  void release(std::uint64_t ticket) {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(ticket);
    if (it == entries_.end()) return;
    forget(it);
  }

 private:
  struct Entry {
    std::string source;
    bool handshaking = true;
    std::weak_ptr<Connection> connection;
  };
  struct Source {
    std::size_t total = 0;
    std::set<std::uint64_t> handshaking;  // tickets grow with accept order: oldest first
  };

  void forget(std::unordered_map<std::uint64_t, Entry>::iterator it) {
    const auto source = sources_.find(it->second.source);
    if (it->second.handshaking) {
      source->second.handshaking.erase(it->first);
      --handshaking_;
      metrics_.connections_handshaking = static_cast<std::int64_t>(handshaking_);
    }
    if (--source->second.total == 0) sources_.erase(source);
    --open_;
    entries_.erase(it);
  }

  std::weak_ptr<Connection> evict(std::uint64_t ticket) {
    const auto it = entries_.find(ticket);
    std::weak_ptr<Connection> connection = it->second.connection;
    forget(it);
    ++metrics_.handshakes_evicted;
    return connection;
  }

  // Linear in the number of sources, which max_connections bounds; only when a budget is full.
  std::uint64_t heaviest_oldest_handshake() const {
    const Source* heaviest = nullptr;
    for (const auto& [key, source] : sources_) {
      if (source.handshaking.empty()) continue;
      if (!heaviest || source.handshaking.size() > heaviest->handshaking.size() ||
          (source.handshaking.size() == heaviest->handshaking.size() &&
           *source.handshaking.begin() < *heaviest->handshaking.begin())) {
        heaviest = &source;
      }
    }
    return *heaviest->handshaking.begin();
  }

  Metrics& metrics_;
  Budgets budgets_{};
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> entries_;
  std::unordered_map<std::string, Source> sources_;
  std::size_t open_ = 0;
  std::size_t handshaking_ = 0;
  std::uint64_t last_ticket_ = 0;
};

struct Server::Impl {
  Impl(const Config& c, Backend b, Metrics& m, Logger& l)
      : config(c),
        backend(std::move(b)),
        metrics(m),
        logger(l),
        tls(TlsFiles{c.server.tls_cert, c.server.tls_key, c.server.bridge_ca,
                     c.server.tls_min_version}),
        id_prefix(random_hex(4)),
        admission(c.limits, m),
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
  ConnectionAdmission admission;

  net::io_context ioc;
  tcp::acceptor acceptor;
  net::signal_set signals;
  net::steady_timer retry_timer;
  net::steady_timer drain_timer;
  net::thread_pool workers;  // destroyed first: its jobs hold connections
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `ticket`: its place in the server's ConnectionAdmission, given back when it closes.
  Connection(Server::Impl& server, tcp::socket&& socket, const tcp::endpoint& remote,
             std::uint64_t ticket, std::shared_ptr<net::ssl::context> context)
      : server_(server),
        context_(std::move(context)),
        stream_(std::move(socket), *context_),
        ticket_(ticket) {
    peer_ = remote.address().to_string() + ":" + std::to_string(remote.port());
    ++server_.metrics.connections_open;
    ++server_.metrics.connections_accepted;
  }

  ~Connection() {
    server_.admission.release(ticket_);
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

  // Called (on this connection's strand) when a newer connection took its place while it
  // was still in its TLS handshake: reset (RST, no TIME_WAIT), like a refused connection.
  void on_evicted() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().set_option(net::socket_base::linger(true, 0),
                                                         ignored);
    close_now();
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
    // From now on no new connection can take this one's place.
    if (!server_.admission.established(ticket_)) return close_now();
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
      if (require(http::verb::get, "GET")) {
        if (token_stalled()) return send(stalled_reply());  // the workers may all be stuck
        run_on_worker([&server = server_] { return readiness(server); });
      }
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
    const auto [first, last] = request_.equal_range(http::field::content_type);
    if (first != last && std::next(first) == last) {
      if (const auto problem = json_content_type_problem(first->value())) {
        send(error_reply(415, "malformed_request", "Content-Type: " + *problem));
        return false;
      }
      return true;
    }
    send(error_reply(415, "malformed_request",
                     first == last ? "Content-Type must be application/json"
                                   : "more than one Content-Type field"));
    return false;
  }

  static Reply readiness(Server::Impl& server) {
    if (server.draining) {
      return error_reply(503, "overloaded", "draining: the server is shutting down");
    }
    if (server.backend.audit_ready && !server.backend.audit_ready()) {
      return error_reply(503, "audit_unavailable",
                         "the audit log cannot be written; nothing can be admitted or released "
                         "until it recovers");
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
          refusal.fields["conference"] = hex(wire::bridge_request_from_json(body).conference_id);
        } catch (const ProtocolError&) {
        }
        // Nothing authenticated this request (that is the refusal): anyone can send any
        // number, so its audit cost is bounded (AuditSink::unauthenticated_refusal).
        try {
          if (server.backend.audit)
            server.backend.audit->unauthenticated_refusal(refusal, context.peer);
        } catch (const AuditUnavailable& error) {
          server.logger.error("audit log unavailable for a refusal",
                              {{"id", context.request_id}, {"error", error.what()}});
        }
        return error_reply(403, "bridge_not_authorized",
                           "mutual TLS required with a bridge certificate: " + peer.problem);
      });
      return;
    }
    run_on_worker(
        [&server = server_, body = std::move(request_.body()), context, identity = peer.identity] {
          if (!server.backend.bridges) {
            throw ProtocolError(ErrorCode::internal_error, "no bridge service configured");
          }
          const wire::BridgeKeyRequest request = wire::bridge_request_from_json(body);
          const BridgeRelease release = server.backend.bridges->release(
              identity, request.conference_id, context, request.bridge_key_version);
          return Reply{200, "application/json", wire::bridge_release_to_json(release), "ok"};
        });
  }

  // Runs job on the worker pool (token calls, audit fsync) and sends its reply from this
  // connection's strand. Beyond max_pending_requests queued jobs: 503 at once.
  // A token call has run past limits.token_stall: the token hangs (a call cannot be
  // cancelled), so nothing that needs it waits for a worker.
  bool token_stalled() const {
    return server_.backend.oldest_token_call &&
           server_.backend.oldest_token_call() > server_.config.limits.token_stall;
  }
  static Reply stalled_reply() {
    return error_reply(503, "token_unavailable", "the token is not answering; retry later");
  }

  template <class Job>
  void run_on_worker(Job job) {
    if (token_stalled()) {
      ++server_.metrics.token_stall_refusals;
      return send(stalled_reply());
    }
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
    server_.admission.release(ticket_);  // its slots are free at once
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
  std::uint64_t ticket_;
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
    beast::error_code endpoint_ec;
    const tcp::endpoint remote = socket.remote_endpoint(endpoint_ec);
    ConnectionAdmission::Decision decision;
    if (!endpoint_ec) decision = admission.admit(source_key(remote.address()));
    for (const auto& weak : decision.evicted) {
      if (auto evicted = weak.lock()) {
        net::post(evicted->executor(), [evicted] { evicted->on_evicted(); });
      }
    }
    if (decision.verdict == ConnectionAdmission::Verdict::admitted) {
      auto connection = std::make_shared<Connection>(*this, std::move(socket), remote,
                                                     decision.ticket, tls.current());
      admission.attach(decision.ticket, connection);
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

namespace {

bool is_tchar(char c) {  // RFC 9110 token characters
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// A token at the front of text (removed); empty if there is none.
std::string_view take_token(std::string_view& text) {
  std::size_t n = 0;
  while (n < text.size() && is_tchar(text[n])) ++n;
  const std::string_view token = text.substr(0, n);
  text.remove_prefix(n);
  return token;
}

}  // namespace

std::optional<std::string> json_content_type_problem(std::string_view value) {
  // RFC 9110 media-type: type "/" subtype *( OWS ";" OWS [ parameter ] ), parameter =
  // token "=" ( token / quoted-string ); names and the type are case-insensitive.
  std::string_view rest = trim_ows(value);
  const std::string_view type = take_token(rest);
  if (rest.empty() || rest.front() != '/') return "not a media type (must be application/json)";
  rest.remove_prefix(1);
  const std::string_view subtype = take_token(rest);
  if (!beast::iequals(type, "application") || !beast::iequals(subtype, "json")) {
    return "must be application/json";
  }
  while (true) {
    rest = trim_ows(rest);
    if (rest.empty()) return std::nullopt;
    if (rest.front() != ';') return "malformed media type parameters";
    rest.remove_prefix(1);
    rest = trim_ows(rest);
    if (rest.empty() || rest.front() == ';') continue;  // an empty parameter
    const std::string_view name = take_token(rest);
    if (name.empty() || rest.empty() || rest.front() != '=') {
      return "malformed media type parameter";
    }
    rest.remove_prefix(1);
    std::string parameter_value;
    if (!rest.empty() && rest.front() == '"') {
      std::size_t i = 1;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        parameter_value += rest[i];
      }
      if (i >= rest.size()) return "unterminated quoted parameter value";
      rest.remove_prefix(i + 1);
    } else {
      parameter_value = std::string(take_token(rest));
      if (parameter_value.empty()) return "malformed media type parameter";
    }
    // JSON is UTF-8 (RFC 8259 section 8.1): a body declared in any other charset is not
    // read as if it were UTF-8. Other parameters have no meaning for application/json.
    if (beast::iequals(name, "charset") && !beast::iequals(parameter_value, "utf-8")) {
      return "charset " + parameter_value.substr(0, 32) + " is not utf-8";
    }
  }
}

}  // namespace kms::server
