#include "router.h"

#include <boost/beast/http/field.hpp>
#include <iterator>

#include "kms/server/content_type.h"

namespace kms::server {
namespace {

namespace http = boost::beast::http;

// Why the request is not JSON for a JSON route, or nullopt.
std::optional<Reply> json_refusal(const Request& request) {
  const auto [first, last] = request.equal_range(http::field::content_type);
  if (first != last && std::next(first) == last) {
    if (const auto problem = json_content_type_problem(first->value())) {
      return error_reply(415, "malformed_request", "Content-Type: " + *problem);
    }
    return std::nullopt;
  }
  return error_reply(
      415, "malformed_request",
      first == last ? "Content-Type must be application/json" : "more than one Content-Type field");
}

}  // namespace

Router::Router(std::vector<Route> routes) : routes_(std::move(routes)) {}

Routing Router::route(const Request& request) const {
  std::string_view path(request.target().data(), request.target().size());
  if (const auto query = path.find('?'); query != std::string_view::npos) {
    path = path.substr(0, query);
  }
  const std::string_view method(request.method_string().data(), request.method_string().size());
  Routing routing;
  for (const Route& route : routes_) {
    if (route.path != path) continue;
    routing.endpoint = route.endpoint;
    if (route.method == method) {
      routing.route = &route;
      break;
    }
    if (!routing.allow.empty()) routing.allow += ", ";
    routing.allow += route.method;
  }
  if (routing.route) {
    routing.allow.clear();
    if (routing.route->body == Body::json) routing.refusal = json_refusal(request);
    if (routing.refusal) routing.route = nullptr;
  } else if (!routing.allow.empty()) {
    routing.refusal =
        error_reply(405, "malformed_request", "method not allowed; use " + routing.allow);
  } else {
    routing.refusal = error_reply(404, "malformed_request", "no such endpoint");
  }
  return routing;
}

}  // namespace kms::server
