#include "tls_test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <stdexcept>

#include "client_tls.h"

namespace kmstest {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::unique_ptr<ssl::context> client_context(const std::string& ca_file, const std::string& cert,
                                             const std::string& key) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_client);
  kms::tools::ClientTlsOptions options;
  options.ca_file = ca_file;
  options.cert_file = cert;
  options.key_file = key;
  kms::tools::configure_client_context(context->native_handle(), options);
  return context;
}

constexpr std::chrono::milliseconds kSocketTimeout{10000};

// Opens `socket` and binds it to `source_address` (port chosen by the OS) when one is given.
void bind_source(tcp::socket& socket, const std::string& source_address) {
  if (source_address.empty()) return;
  socket.open(tcp::v4());
  socket.bind(tcp::endpoint(net::ip::make_address(source_address), 0));
}

RawResponse to_raw(const http::response<http::string_body>& response) {
  RawResponse result;
  result.status = response.result_int();
  result.body = response.body();
  std::ostringstream headers;
  headers << response.base();
  result.headers = "\n" + headers.str();
  return result;
}

}  // namespace

std::string RawResponse::header(const std::string& name) const {
  const std::string needle = "\n" + name + ": ";
  const auto at = headers.find(needle);
  if (at == std::string::npos) return {};
  const auto end = headers.find("\r\n", at + needle.size());
  return headers.substr(at + needle.size(), end - at - needle.size());
}

RawResponse https_request(std::uint16_t port, const std::string& ca_file, const std::string& method,
                          const std::string& target, const std::string& content_type,
                          const std::string& body, const std::string& cert_file,
                          const std::string& key_file, const std::string& source_address) {
  net::io_context ioc;
  auto context = client_context(ca_file, cert_file, key_file);
  beast::ssl_stream<tcp::socket> stream(ioc, *context);
  bind_source(stream.next_layer(), source_address);
  stream.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  kms::tools::set_socket_timeouts(stream.next_layer().native_handle(), kSocketTimeout);
  stream.handshake(ssl::stream_base::client);
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  request.set(http::field::host, "127.0.0.1");
  if (!content_type.empty()) request.set(http::field::content_type, content_type);
  request.body() = body;
  request.prepare_payload();
  beast::error_code ec;
  http::write(stream, request, ec);
  RawResponse result;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 24);
  http::read(stream, buffer, parser, ec);  // the server may answer before reading it all
  if (ec && !parser.is_header_done()) return result;
  return to_raw(parser.get());
}

struct RawTlsConnection::Impl {
  std::uint16_t port;
  std::string ca_file, cert_file, key_file, source_address;
  net::io_context ioc;
  std::unique_ptr<ssl::context> context;
  std::unique_ptr<beast::ssl_stream<tcp::socket>> stream;
  beast::flat_buffer buffer;
};

RawTlsConnection::RawTlsConnection(std::uint16_t port, std::string ca_file, std::string cert_file,
                                   std::string key_file, std::string source_address)
    : impl_(std::make_unique<Impl>()) {
  impl_->port = port;
  impl_->source_address = std::move(source_address);
  impl_->context = client_context(ca_file, cert_file, key_file);
  impl_->ca_file = std::move(ca_file);
  impl_->cert_file = std::move(cert_file);
  impl_->key_file = std::move(key_file);
}

RawTlsConnection::~RawTlsConnection() = default;

bool RawTlsConnection::connected() const { return impl_->stream != nullptr; }

RawTlsConnection::Exchange RawTlsConnection::exchange(const std::string& method,
                                                      const std::string& target,
                                                      const std::string& content_type,
                                                      const std::string& body,
                                                      const Headers& headers) {
  Exchange result;
  Impl& impl = *impl_;
  beast::error_code ec;
  if (!impl.stream) {
    impl.buffer.clear();
    impl.stream = std::make_unique<beast::ssl_stream<tcp::socket>>(impl.ioc, *impl.context);
    bind_source(impl.stream->next_layer(), impl.source_address);
    impl.stream->next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), impl.port),
                                      ec);
    if (!ec) {
      kms::tools::set_socket_timeouts(impl.stream->next_layer().native_handle(), kSocketTimeout);
      impl.stream->handshake(ssl::stream_base::client, ec);
    }
    if (ec) {
      impl.stream.reset();
      result.outcome = Outcome::not_connected;
      result.error = ec.message();
      return result;
    }
  }
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  if (request.method() == http::verb::unknown) request.method_string(method);
  request.set(http::field::host, "127.0.0.1");
  if (!content_type.empty()) request.set(http::field::content_type, content_type);
  for (const auto& [name, value] : headers) request.set(name, value);
  request.body() = body;
  request.prepare_payload();
  request.keep_alive(true);
  beast::error_code write_ec;
  http::write(*impl.stream, request, write_ec);  // on failure the read below says why
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 24);
  http::read(*impl.stream, impl.buffer, parser, ec);
  if (!ec) {
    result.outcome = Outcome::complete;
    result.response = to_raw(parser.get());
    if (!parser.get().keep_alive()) impl.stream.reset();
    return result;
  }
  const bool got_some = parser.got_some() || impl.buffer.size() > 0;
  const bool ended = ec == http::error::end_of_stream || ec == http::error::partial_message ||
                     ec == net::error::eof || ec == ssl::error::stream_truncated ||
                     ec == net::error::connection_reset || ec == net::error::broken_pipe;
  result.outcome = got_some ? Outcome::cut_response
                            : (ended ? Outcome::closed_before_response : Outcome::transport_error);
  result.error = ec.message() + (write_ec ? " (write: " + write_ec.message() + ")" : "");
  impl.stream.reset();
  return result;
}

const char* outcome_name(RawTlsConnection::Outcome outcome) {
  switch (outcome) {
    case RawTlsConnection::Outcome::complete:
      return "complete";
    case RawTlsConnection::Outcome::not_connected:
      return "not_connected";
    case RawTlsConnection::Outcome::closed_before_response:
      return "closed_before_response";
    case RawTlsConnection::Outcome::cut_response:
      return "cut_response";
    case RawTlsConnection::Outcome::transport_error:
      return "transport_error";
  }
  return "?";
}

struct SlowTlsConnection::Impl {
  net::io_context ioc;
  std::unique_ptr<ssl::context> context;
  std::unique_ptr<beast::ssl_stream<tcp::socket>> stream;
};

SlowTlsConnection::SlowTlsConnection(std::uint16_t port, const std::string& ca_file)
    : impl_(std::make_unique<Impl>()) {
  impl_->context = client_context(ca_file, {}, {});
  impl_->stream = std::make_unique<beast::ssl_stream<tcp::socket>>(impl_->ioc, *impl_->context);
  impl_->stream->next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  kms::tools::set_socket_timeouts(impl_->stream->next_layer().native_handle(), kSocketTimeout);
  impl_->stream->handshake(ssl::stream_base::client);
}

SlowTlsConnection::~SlowTlsConnection() = default;

bool SlowTlsConnection::write(const std::string& bytes) {
  beast::error_code ec;
  net::write(*impl_->stream, net::buffer(bytes), ec);
  return !ec;
}

bool SlowTlsConnection::closed_by_server(std::chrono::milliseconds wait) {
  const int fd = impl_->stream->next_layer().native_handle();
  pollfd descriptor{fd, POLLIN, 0};
  if (::poll(&descriptor, 1, static_cast<int>(wait.count())) <= 0) return false;
  char byte;
  beast::error_code ec;
  impl_->stream->read_some(net::buffer(&byte, 1), ec);
  return static_cast<bool>(ec);  // EOF, truncated stream or reset
}

int open_silent_tcp(std::uint16_t port, const std::string& source_address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (!source_address.empty()) {
    sockaddr_in source{};
    source.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source_address.c_str(), &source.sin_addr) != 1 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) {
      ::close(fd);
      return -1;
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace kmstest
