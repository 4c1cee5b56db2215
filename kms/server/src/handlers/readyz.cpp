#include "handlers.h"

namespace kms::server::handlers {

Handler readyz(ReadinessProbes probes) {
  return [probes = std::move(probes)](Exchange& exchange) -> Answer {
    // Answered at once while the token hangs: the workers may all be stuck in it.
    if (exchange.server.token_stalled()) {
      return error_reply(503, "token_unavailable", "the token is not answering; retry later");
    }
    return WorkerJob([&probes, &server = exchange.server] {
      if (server.draining()) {
        return error_reply(503, "overloaded", "draining: the server is shutting down");
      }
      if (probes.audit_ready && !probes.audit_ready()) {
        return error_reply(503, "audit_unavailable",
                           "the audit log cannot be written; nothing can be admitted or released "
                           "until it recovers");
      }
      if (probes.token_ready && !probes.token_ready()) {
        return error_reply(503, "token_unavailable", "the token is not reachable or not logged in");
      }
      return Reply{200, "application/json", R"({"status":"ready"})"};
    });
  };
}

}  // namespace kms::server::handlers
