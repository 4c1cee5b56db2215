#include "connection.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include "error_response.h"

namespace kms::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

Connection::Connection(ServerCore& server, tcp::socket&& socket, const tcp::endpoint& remote,
                       std::uint64_t ticket, std::shared_ptr<net::ssl::context> context)
    : server_(server),
      context_(std::move(context)),
      stream_(std::move(socket), *context_),
      ticket_(ticket),
      source_(source_id(remote.address())) {
  peer_ = remote.address().to_string() + ":" + std::to_string(remote.port());
  ++server_.metrics.connection_objects;
  ++server_.metrics.connections_accepted;
}

Connection::~Connection() {
  server_.admission.release(ticket_);
  --server_.metrics.connection_objects;
  std::lock_guard lock(server_.connections_mutex);
  server_.connections.erase(this);
}

void Connection::start() {
  {
    std::lock_guard lock(server_.connections_mutex);
    server_.connections.emplace(this, weak_from_this());
  }
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_handshake(); });
}

void Connection::on_drain() {
  if (!busy_) beast::get_lowest_layer(stream_).cancel();
}

void Connection::on_evicted() {
  beast::error_code ignored;
  beast::get_lowest_layer(stream_).socket().set_option(net::socket_base::linger(true, 0), ignored);
  close_now();
}

void Connection::do_handshake() {
  beast::get_lowest_layer(stream_).expires_after(server_.config.limits.handshake_timeout);
  stream_.async_handshake(
      net::ssl::stream_base::server,
      [self = shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
}

void Connection::on_handshake(beast::error_code ec) {
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

void Connection::do_read() {
  if (server_.draining()) return do_shutdown();
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

void Connection::on_read(beast::error_code ec) {
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
    return send(error_reply(
        431, "malformed_request",
        "header larger than " + std::to_string(server_.config.limits.max_header_bytes) + " bytes"));
  }
  if (ec && ec.category() == http::make_error_code(http::error::bad_target).category()) {
    close_after_ = true;
    return send(error_reply(400, "malformed_request", "not an HTTP/1.1 request: " + ec.message()));
  }
  if (ec) return close_now();  // reset, TLS error, cancelled by the drain
  busy_ = true;
  request_ = parser_->release();
  dispatch();
}

void Connection::dispatch() {
  Routing routing = server_.router.route(request_);
  endpoint_ = routing.endpoint;
  if (!routing.route) {
    allow_ = std::move(routing.allow);
    return send(std::move(*routing.refusal));
  }
  Exchange exchange{std::move(request_.body()),
                    RequestContext{peer_, request_id_},
                    stream_.native_handle(),
                    server_,
                    {}};
  Answer answer = routing.route->handler(exchange);
  bridge_ = std::move(exchange.bridge);
  if (auto* reply = std::get_if<Reply>(&answer)) return send(std::move(*reply));
  run_on_worker(std::move(std::get<WorkerJob>(answer)));
}

// Runs job on the worker pool (token calls, audit fsync) and sends its reply from this
// connection's strand, if admission control lets it in: a source past its rate gets 429
// and the bound on requests in flight 503, at once. While a token call hangs (it cannot be
// cancelled), nothing that may need the token waits for a worker.
void Connection::run_on_worker(WorkerJob job) {
  if (server_.token_stalled()) {
    ++server_.metrics.token_stall_refusals;
    return send(error_reply(503, "token_unavailable", "the token is not answering; retry later"));
  }
  const AdmissionControl::Decision admission = server_.request_admission.admit(source_);
  if (admission.verdict == AdmissionControl::Verdict::overloaded) {
    return send(error_reply(503, "overloaded", "too many requests in progress; retry"));
  }
  if (admission.verdict == AdmissionControl::Verdict::rate_limited) {
    Reply reply =
        error_reply(429, "rate_limited", "too many requests from this source; retry later");
    reply.retry_after_seconds = admission.retry_after_seconds;
    return send(std::move(reply));
  }
  net::post(server_.workers, [self = shared_from_this(), job = std::move(job)]() mutable {
    Reply reply = run_guarded(job, self->server_.logger, self->request_id_);
    self->server_.request_admission.release();
    net::post(self->stream_.get_executor(),
              [self, reply = std::move(reply)]() mutable { self->send(std::move(reply)); });
  });
}

void Connection::send(Reply reply) {
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
  // drain; token_unavailable; audit_unavailable) is worth retrying: docs/SERVER.md "Errors";
  // a 429 says when.
  if (reply.retry_after_seconds > 0) {
    response_->set(http::field::retry_after, std::to_string(reply.retry_after_seconds));
  } else if (reply.status == 503) {
    response_->set(http::field::retry_after, "1");
  }
  const bool keep_alive = !close_after_ && !server_.draining() && request_.keep_alive();
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

void Connection::on_write(beast::error_code ec, bool keep_alive) {
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

void Connection::do_shutdown() {
  beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
  stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->close_now(); });
}

void Connection::close_now() {
  beast::error_code ignored;
  auto& socket = beast::get_lowest_layer(stream_).socket();
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  server_.admission.release(ticket_);  // its slots are free at once
}

}  // namespace kms::server
