// kmsd's routes: a table of (method, path) -> handler, so an endpoint is one handler file
// and one row (kms/server/src/routes.cpp). The connection does the transport (TLS, HTTP
// parsing, the 404 / 405 / 415 refusals, the response and its log line); a handler only
// turns a request into a reply, on the I/O thread or as a job for the worker pool.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kms/services.h"

namespace kms::server {

struct Reply {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string outcome = "ok";             // the metrics and log label: "ok" or the error code
  std::uint32_t retry_after_seconds = 0;  // Retry-After when set; every 503 has 1
};

// {"error": code, "detail": detail} with `status` (docs/SERVER.md "Errors").
Reply error_reply(unsigned status, std::string_view code, std::string_view detail);

// What a handler may ask of the server (thread-safe).
class ServerState {
 public:
  virtual bool draining() const = 0;
  // A token call has run past limits.token_stall: the token hangs.
  virtual bool token_stalled() const = 0;

 protected:
  ~ServerState() = default;
};

// One request as a handler sees it.
struct Exchange {
  std::string body;        // moved out of the request
  RequestContext context;  // peer and request id
  SSL* tls = nullptr;      // the connection's TLS session (its client certificate)
  const ServerState& server;
  std::string bridge;  // set by a handler: the bridge identity for the request's log line
};

// Runs on a worker thread (token calls, audit fsync); whatever it throws becomes an error
// reply (error_response.h). It must not refer to the Exchange, which is gone by then.
using WorkerJob = std::function<Reply()>;
// A reply now, on the I/O thread, or a job for the workers.
using Answer = std::variant<Reply, WorkerJob>;
using Handler = std::function<Answer(Exchange&)>;

enum class Body { none, json };  // json: exactly one Content-Type, application/json (415)

struct Route {
  std::string_view method;    // "GET", "POST"
  std::string_view path;      // exact; a query string is ignored
  std::string_view endpoint;  // the metrics label (docs/SERVER.md "Metrics")
  Body body;
  Handler handler;
};

}  // namespace kms::server
