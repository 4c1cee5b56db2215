// Turns what escapes a service's work (or reaches the server) into the one error type the
// server answers with; the server maps its code to an HTTP status (kms/server http_status.h).
#pragma once

#include <exception>
#include <map>
#include <string>

#include "kms/audit.h"
#include "kms/errors.h"

namespace kms {

// Rethrows the current exception as a ProtocolError: ProtocolError as is; hsm::Error as
// token_unavailable (overloaded for a session-pool timeout); AuditUnavailable as
// audit_unavailable; tokens::LookupError as the subscriber/bridge code; else internal_error.
[[noreturn]] void rethrow_as_protocol_error(bool bridge_lookup);

// Records a refusal with the error's code and detail added to `fields`. Best effort: a
// refusal releases nothing, so it stands even if the audit log cannot take it. An
// audit_unavailable error is not recorded (the log is what failed). `authenticated`: the
// request had proven who sent it (both envelopes opened; a verified bridge certificate).
// A refusal before that is anyone's to send, as many times as they like: it goes to
// AuditSink::unauthenticated_refusal (bounded cost, keyed by fields["peer"]); after it,
// every refusal is a record of its own.
void audit_refusal(AuditSink& audit, const ProtocolError& error,
                   std::map<std::string, std::string> fields, bool authenticated);

}  // namespace kms
