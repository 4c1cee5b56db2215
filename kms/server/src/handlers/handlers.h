// One handler per endpoint (docs/SERVER.md "Endpoints"); the route table that puts them on
// their paths is kms/server/src/routes.cpp.
#pragma once

#include <functional>

#include "kms/audit.h"
#include "kms/server/logger.h"
#include "kms/server/metrics.h"
#include "kms/server/route.h"
#include "kms/services.h"

namespace kms::server::handlers {

// GET /healthz: 200 while the process serves.
Handler healthz();

// What /readyz asks (each runs on a worker).
struct ReadinessProbes {
  std::function<bool()> audit_ready;  // the audit log takes records
  std::function<bool()> token_ready;  // the token is reachable and logged in
};
// GET /readyz
Handler readyz(ReadinessProbes probes);

// GET /metrics: the Prometheus text format.
Handler metrics(const Metrics& metrics);

// POST /v1/key-request
Handler key_request(KeyRequestService& service);

// POST /v1/bridge/keys: mutual TLS; a connection without a valid bridge certificate is
// refused and audited here (`audit` takes the unauthenticated refusal).
Handler bridge_keys(BridgeService& service, AuditSink& audit, Logger& logger);

}  // namespace kms::server::handlers
