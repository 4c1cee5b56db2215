#include "error_mapping.h"

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
    throw ProtocolError(ErrorCode::audit_unavailable, error.what());
  } catch (const hsm::Error& error) {
    if (error.function() == "SessionPool::acquire") {
      throw ProtocolError(ErrorCode::overloaded, "no token session available");
    }
    throw ProtocolError(ErrorCode::token_unavailable, error.what());
  } catch (const tokens::DatabaseError& error) {
    throw ProtocolError(ErrorCode::internal_error, std::string("key database: ") + error.what());
  } catch (const std::exception& error) {
    throw ProtocolError(ErrorCode::internal_error, error.what());
  }
}

}  // namespace kms
