// One client connection's state machine: TLS handshake -> read a request -> route it ->
// answer (on the I/O thread, or from the worker pool) -> keep-alive or close; with the
// handshake / read / write timeouts, the size limits, the drain, and the connection budgets
// (a displaced handshake is reset). Runs on its own strand.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "server_core.h"

namespace kms::server {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `ticket`: its place in the server's ConnectionAdmission, given back when it closes.
  Connection(ServerCore& server, boost::asio::ip::tcp::socket&& socket,
             const boost::asio::ip::tcp::endpoint& remote, std::uint64_t ticket,
             std::shared_ptr<boost::asio::ssl::context> context);
  ~Connection();

  void start();
  // Called (on this connection's strand) when the server starts draining.
  void on_drain();
  // Called (on this connection's strand) when a newer connection took its place while it
  // was still in its TLS handshake: reset (RST, no TIME_WAIT), like a refused connection.
  void on_evicted();
  auto executor() { return stream_.get_executor(); }

 private:
  using Clock = std::chrono::steady_clock;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  void do_handshake();
  void on_handshake(boost::beast::error_code ec);
  void do_read();
  void on_read(boost::beast::error_code ec);
  void dispatch();
  void run_on_worker(WorkerJob job);
  void send(Reply reply);
  void on_write(boost::beast::error_code ec, bool keep_alive);
  void do_shutdown();
  void close_now();

  ServerCore& server_;
  std::shared_ptr<boost::asio::ssl::context> context_;  // kept alive for the stream
  boost::beast::ssl_stream<boost::beast::tcp_stream> stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
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
  SourceId source_;  // for the rate limit
};

}  // namespace kms::server
