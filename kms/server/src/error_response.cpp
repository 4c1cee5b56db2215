#include "error_response.h"

#include "kms/core/error_mapping.h"
#include "kms/server/http_status.h"
#include "kms/server/wire.h"

namespace kms::server {
namespace {

Reply reply_for(const ProtocolError& error, Logger& logger, const std::string& request_id,
                std::string detail) {
  // A fault of the server's own side is logged with its diagnostic (PKCS#11 call and CKR,
  // database error); the client gets the stable code and a fixed detail only.
  if (!error.diagnostic().empty()) {
    const bool fault = error.code() == ErrorCode::token_unavailable ||
                       error.code() == ErrorCode::internal_error ||
                       error.code() == ErrorCode::audit_unavailable;
    const LogFields fields{{"id", request_id},
                           {"code", std::string(error_code_name(error.code()))},
                           {"error", error.diagnostic()}};
    if (fault) {
      logger.error("request failed on the server side", fields);
    } else {
      logger.warn("request refused", fields);
    }
  }
  return error_reply(http_status_for(error.code()), error_code_name(error.code()), detail);
}

}  // namespace

Reply error_reply(unsigned status, std::string_view code, std::string_view detail) {
  return {status, "application/json", wire::error_to_json(code, detail), std::string(code)};
}

Reply run_guarded(const WorkerJob& job, Logger& logger, const std::string& request_id) {
  try {
    return job();
  } catch (const ProtocolError& error) {
    return reply_for(error, logger, request_id, error.detail());
  } catch (...) {
    try {
      rethrow_as_protocol_error(false);
    } catch (const ProtocolError& error) {
      // Escaped the services' own mapping: an unexpected error names the request id, which
      // leads to the log line with what happened.
      return reply_for(error, logger, request_id,
                       error.code() == ErrorCode::internal_error
                           ? error.detail() + "; request id " + request_id
                           : error.detail());
    }
  }
}

}  // namespace kms::server
