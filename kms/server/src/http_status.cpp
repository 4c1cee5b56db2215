#include "kms/server/http_status.h"

namespace kms::server {

unsigned http_status_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::malformed_request:
    case ErrorCode::unsupported_version:
    case ErrorCode::unknown_message_type:
    case ErrorCode::profile_mismatch:
    case ErrorCode::unsupported_suite:
    case ErrorCode::suite_mismatch:
    case ErrorCode::invalid_identity:
      return 400;
    case ErrorCode::unknown_subscriber:
    case ErrorCode::subscriber_revoked:
    case ErrorCode::key_version_mismatch:
    case ErrorCode::envelope_authentication_failed:
    case ErrorCode::identity_mismatch:
    case ErrorCode::stale_timestamp:
      return 403;
    case ErrorCode::replay:
      return 409;
    case ErrorCode::unknown_conference:
      return 404;
    case ErrorCode::conference_expired:
      return 410;
    case ErrorCode::bridge_not_provisioned:
    case ErrorCode::bridge_revoked:
    case ErrorCode::bridge_not_authorized:
      return 403;
    case ErrorCode::audit_unavailable:
    case ErrorCode::token_unavailable:
    case ErrorCode::overloaded:
      return 503;
    case ErrorCode::rate_limited:
      return 429;
    case ErrorCode::internal_error:
      return 500;
  }
  return 500;
}

}  // namespace kms::server
