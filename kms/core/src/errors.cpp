#include "kms/errors.h"

namespace kms {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::malformed_request:
      return "malformed_request";
    case ErrorCode::unsupported_version:
      return "unsupported_version";
    case ErrorCode::unknown_message_type:
      return "unknown_message_type";
    case ErrorCode::profile_mismatch:
      return "profile_mismatch";
    case ErrorCode::unsupported_suite:
      return "unsupported_suite";
    case ErrorCode::suite_mismatch:
      return "suite_mismatch";
    case ErrorCode::invalid_identity:
      return "invalid_identity";
    case ErrorCode::unknown_subscriber:
      return "unknown_subscriber";
    case ErrorCode::subscriber_revoked:
      return "subscriber_revoked";
    case ErrorCode::key_version_mismatch:
      return "key_version_mismatch";
    case ErrorCode::envelope_authentication_failed:
      return "envelope_authentication_failed";
    case ErrorCode::identity_mismatch:
      return "identity_mismatch";
    case ErrorCode::stale_timestamp:
      return "stale_timestamp";
    case ErrorCode::replay:
      return "replay";
    case ErrorCode::unknown_conference:
      return "unknown_conference";
    case ErrorCode::conference_expired:
      return "conference_expired";
    case ErrorCode::bridge_not_provisioned:
      return "bridge_not_provisioned";
    case ErrorCode::bridge_revoked:
      return "bridge_revoked";
    case ErrorCode::bridge_not_authorized:
      return "bridge_not_authorized";
    case ErrorCode::audit_unavailable:
      return "audit_unavailable";
    case ErrorCode::token_unavailable:
      return "token_unavailable";
    case ErrorCode::overloaded:
      return "overloaded";
    case ErrorCode::rate_limited:
      return "rate_limited";
    case ErrorCode::internal_error:
      return "internal_error";
  }
  return "internal_error";
}

}  // namespace kms
