// Turns what escapes a service's work into the one error type the server sees.
#pragma once

#include <exception>
#include <string>

#include "kms/errors.h"

namespace kms {

// Rethrows the current exception as a ProtocolError: ProtocolError as is; hsm::Error as
// token_unavailable (overloaded for a session-pool timeout); AuditUnavailable as
// audit_unavailable; tokens::LookupError as the subscriber/bridge code; else internal_error.
[[noreturn]] void rethrow_as_protocol_error(bool bridge_lookup);

}  // namespace kms
