#include "kms/client/client_error.h"

namespace kms::client {

std::string_view client_error_name(ClientErrorCode code) {
  switch (code) {
    case ClientErrorCode::invalid_argument:
      return "invalid_argument";
    case ClientErrorCode::malformed_message:
      return "malformed_message";
    case ClientErrorCode::unexpected_type:
      return "unexpected_type";
    case ClientErrorCode::profile_mismatch:
      return "profile_mismatch";
    case ClientErrorCode::suite_mismatch:
      return "suite_mismatch";
    case ClientErrorCode::conference_mismatch:
      return "conference_mismatch";
    case ClientErrorCode::key_id_mismatch:
      return "key_id_mismatch";
    case ClientErrorCode::unwrap_failed:
      return "unwrap_failed";
    case ClientErrorCode::key_version_mismatch:
      return "key_version_mismatch";
    case ClientErrorCode::crypto_failure:
      return "crypto_failure";
  }
  return "unknown";
}

}  // namespace kms::client
