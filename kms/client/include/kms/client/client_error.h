// Why the UE or bridge side refused a message or an argument.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace kms::client {

enum class ClientErrorCode {
  invalid_argument,      // bad identity, nonce length, suite or profile given by the caller
  malformed_message,     // truncated, over-long, wrong version or field length
  unexpected_type,       // e.g. a responder response offered as a chair response
  profile_mismatch,      // message names another profile than this client's
  suite_mismatch,        // response names another suite than requested
  conference_mismatch,   // conf_id differs from the one computed from (ID-A, R_A)
  key_id_mismatch,       // key_id differs from the one computed from (conf_id, member, R)
  unwrap_failed,         // RFC 5649 integrity check failed: wrong W, tampered response
  key_version_mismatch,  // a bridge release wrapped under another bridge key version
  crypto_failure,        // OpenSSL failed (not an input problem)
};

std::string_view client_error_name(ClientErrorCode code);

class ClientError : public std::runtime_error {
 public:
  ClientError(ClientErrorCode code, const std::string& detail)
      : std::runtime_error(std::string(client_error_name(code)) + ": " + detail), code_(code) {}
  ClientErrorCode code() const noexcept { return code_; }

 private:
  ClientErrorCode code_;
};

}  // namespace kms::client
