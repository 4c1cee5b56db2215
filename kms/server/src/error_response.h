// The one place where what a worker job throws becomes a reply. Anything but a
// ProtocolError is first mapped by the core's rule (kms/core/error_mapping.h), so the
// server never repeats it; the code's HTTP status is http_status_for().
#pragma once

#include <string>

#include "kms/server/logger.h"
#include "kms/server/route.h"

namespace kms::server {

// Runs job; on an exception answers its code with the status and detail the docs give,
// and logs the diagnostic (never sent to the client) with the request id.
Reply run_guarded(const WorkerJob& job, Logger& logger, const std::string& request_id);

}  // namespace kms::server
