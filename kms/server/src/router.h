// Finds the route of a request and refuses, with the transport's own errors, what no route
// takes: 404 unknown path, 405 wrong method (with Allow), 415 a JSON route without an
// application/json Content-Type (docs/SERVER.md "Errors").
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kms/server/route.h"

namespace kms::server {

using Request = boost::beast::http::request<boost::beast::http::string_body>;

struct Routing {
  const Route* route = nullptr;         // the handler to run, unless refused
  std::string_view endpoint = "other";  // the metrics label, also when refused
  std::string allow;                    // the Allow field of a 405
  std::optional<Reply> refusal;         // 404, 405 or 415
};

class Router {
 public:
  explicit Router(std::vector<Route> routes);
  Routing route(const Request& request) const;

 private:
  std::vector<Route> routes_;
};

}  // namespace kms::server
