// kmsd's route table (docs/SERVER.md "Endpoints"): method, path, metrics label, body rule
// and handler of every endpoint. A new endpoint is a handler file in handlers/ and a row here.
#include "handlers/handlers.h"
#include "kms/server/backend.h"

namespace kms::server {

std::vector<Route> KmsBackend::routes() {
  // A failed audit log is probed for recovery (at most once per audit.retry_interval_ms).
  // Not ready: the token probe tries one recovery (within the breaker's backoff), so
  // /readyz heals without traffic; a balancer sends none to an unready node.
  handlers::ReadinessProbes readiness{[this] { return audit_->probe(); },
                                      [this] { return token_->pool().probe(); }};
  return {
      {"GET", "/healthz", "healthz", Body::none, handlers::healthz()},
      {"GET", "/readyz", "readyz", Body::none, handlers::readyz(std::move(readiness))},
      {"GET", "/metrics", "metrics", Body::none, handlers::metrics(metrics_)},
      {"POST", "/v1/key-request", "key_request", Body::json, handlers::key_request(*key_requests_)},
      {"POST", "/v1/bridge/keys", "bridge_keys", Body::json,
       handlers::bridge_keys(*bridges_, *refusals_, logger_)},
  };
}

}  // namespace kms::server
