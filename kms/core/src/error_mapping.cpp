#include "kms/core/error_mapping.h"

#include "hsm/error.h"
#include "kms/audit.h"
#include "tokens/key_database.h"
#include "tokens/key_store.h"

namespace kms {

void rethrow_as_protocol_error(bool bridge_lookup) {
  try {
    throw;
  } catch (const ProtocolError&) {
    throw;
  } catch (const tokens::LookupError& error) {
    const bool unknown = error.reason() == tokens::LookupError::Reason::unknown;
    if (bridge_lookup || error.kind() == tokens::IdentityKind::bridge) {
      throw ProtocolError(unknown ? ErrorCode::bridge_not_provisioned : ErrorCode::bridge_revoked,
                          error.identity());
    }
    throw ProtocolError(unknown ? ErrorCode::unknown_subscriber : ErrorCode::subscriber_revoked,
                        error.identity());
  } catch (const AuditUnavailable& error) {
    throw ProtocolError(ErrorCode::audit_unavailable,
                        "the audit log cannot be written; nothing was released", error.what());
  } catch (const hsm::Error& error) {
    if (error.kind() == hsm::ErrorKind::pool_exhausted) {
      throw ProtocolError(ErrorCode::overloaded, "no token session available", error.what());
    }
    throw ProtocolError(ErrorCode::token_unavailable, "the token could not complete the request",
                        error.what());
  } catch (const tokens::DatabaseUnavailableError& error) {  // e.g. PostgreSQL restarting
    throw ProtocolError(ErrorCode::overloaded, "key database unavailable",
                        std::string("key database: ") + error.what());
  } catch (const tokens::DatabaseError& error) {
    throw ProtocolError(ErrorCode::internal_error, "internal error",
                        std::string("key database: ") + error.what());
  } catch (const std::exception& error) {
    throw ProtocolError(ErrorCode::internal_error, "internal error", error.what());
  }
}

void audit_refusal(AuditSink& audit, const ProtocolError& error,
                   std::map<std::string, std::string> fields, bool authenticated) {
  if (error.code() == ErrorCode::audit_unavailable) return;
  fields["detail"] = error.detail();
  const std::string peer = fields["peer"];
  try {
    AuditEvent event{"refusal", std::string(error_code_name(error.code())), std::move(fields)};
    if (authenticated) {
      audit.record(event);
    } else {
      audit.unauthenticated_refusal(event, peer);
    }
  } catch (const std::exception&) {
    // Best effort, see the header.
  }
}

}  // namespace kms
