#include "https_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

#include "client_tls.h"

namespace kms::tools {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

}  // namespace

ServerUrl ServerUrl::parse(const std::string& url) {
  constexpr std::string_view scheme = "https://";
  if (url.rfind(scheme, 0) != 0) throw std::invalid_argument("server URL must start with https://");
  std::string rest = url.substr(scheme.size());
  if (const auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  ServerUrl result;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos) throw std::invalid_argument("bad IPv6 address in " + url);
    result.host = rest.substr(1, close - 1);
    result.port =
        close + 2 <= rest.size() && rest[close + 1] == ':' ? rest.substr(close + 2) : "443";
  } else {
    const auto colon = rest.rfind(':');
    result.host = colon == std::string::npos ? rest : rest.substr(0, colon);
    result.port = colon == std::string::npos ? "443" : rest.substr(colon + 1);
  }
  if (result.host.empty() || result.port.empty())
    throw std::invalid_argument("bad server URL " + url);
  return result;
}

bool ServerUrl::is_loopback() const {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

struct HttpsClient::Impl {
  ServerUrl url;
  ClientTlsOptions options;
  net::io_context ioc;
  ssl::context context{ssl::context::tls_client};
  std::optional<beast::ssl_stream<beast::tcp_stream>> stream;
  beast::flat_buffer buffer;

  void connect() {
    stream.emplace(ioc, context);
    SSL* handle = stream->native_handle();
    boost::system::error_code ec;
    (void)net::ip::make_address(url.host, ec);  // an IP address: verify it, no SNI
    X509_VERIFY_PARAM* param = SSL_get0_param(handle);
    if (!ec) {
      X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
    } else {
      SSL_set_tlsext_host_name(handle, url.host.c_str());
      X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
    }
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) throw TransportError("cannot resolve " + url.host + ": " + ec.message());
    auto& socket = beast::get_lowest_layer(*stream).socket();
    net::connect(socket, endpoints, ec);
    if (ec)
      throw TransportError("cannot connect to " + url.host + ":" + url.port + ": " + ec.message());
    set_socket_timeouts(socket.native_handle(), options.timeout);
    stream->handshake(ssl::stream_base::client, ec);
    if (ec) {
      const std::string detail = ssl_errors();
      stream.reset();
      throw TransportError("TLS handshake with " + url.host + ":" + url.port + " failed: " +
                           ec.message() + (detail.empty() ? "" : " (" + detail + ")"));
    }
    buffer.clear();
  }

  HttpResult exchange(http::request<http::string_body>& request) {
    for (int attempt = 0;; ++attempt) {
      const bool fresh = !stream;
      if (fresh) connect();
      boost::system::error_code ec;
      http::write(*stream, request, ec);
      http::response_parser<http::string_body> parser;
      parser.body_limit(16 * 1024 * 1024);
      if (!ec) http::read(*stream, buffer, parser, ec);
      if (ec) {
        stream.reset();
        // A keep-alive connection the server closed meanwhile: retry once on a new one.
        if (!fresh && attempt == 0) continue;
        throw TransportError("HTTP exchange with " + url.host + ":" + url.port +
                             " failed: " + ec.message());
      }
      auto response = parser.release();
      HttpResult result{response.result_int(), std::string(response[http::field::content_type]),
                        std::move(response.body())};
      if (!response.keep_alive()) {
        boost::system::error_code ignored;
        stream->shutdown(ignored);
        stream.reset();
      }
      return result;
    }
  }

  http::request<http::string_body> make(http::verb verb, const std::string& target) {
    http::request<http::string_body> request{verb, target, 11};
    request.set(http::field::host, url.host);
    request.set(http::field::user_agent, "kms-client");
    request.keep_alive(true);
    return request;
  }
};

HttpsClient::HttpsClient(ServerUrl url, ClientTlsOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->url = std::move(url);
  impl_->options = std::move(options);
  configure_client_context(impl_->context.native_handle(), impl_->options);
}

HttpsClient::~HttpsClient() = default;

HttpResult HttpsClient::post_json(const std::string& target, const std::string& body) {
  auto request = impl_->make(http::verb::post, target);
  request.set(http::field::content_type, "application/json");
  request.body() = body;
  request.prepare_payload();
  return impl_->exchange(request);
}

HttpResult HttpsClient::get(const std::string& target) {
  auto request = impl_->make(http::verb::get, target);
  return impl_->exchange(request);
}

}  // namespace kms::tools
