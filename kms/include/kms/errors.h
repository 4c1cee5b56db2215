// Protocol errors with stable codes: what a UE, a bridge and the audit log see.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace kms {

enum class ErrorCode {
  malformed_request,  // bad JSON, bad base64url, truncated or over-long field
  unsupported_version,
  unknown_message_type,  // includes a response or envelope of the wrong type (reflection)
  profile_mismatch,      // envelope profile != the deployment's profile
  unsupported_suite,
  suite_mismatch,    // chair and responder envelopes name different suites
  invalid_identity,  // not a sip:/sips:/tel: IMS public identity
  unknown_subscriber,
  subscriber_revoked,
  key_version_mismatch,
  envelope_authentication_failed,  // GCM tag / AAD check failed
  identity_mismatch,               // encrypted IDs differ from the plain IDs
  stale_timestamp,                 // outside the freshness window (past or future)
  replay,                          // an envelope already used in a different request
  unknown_conference,
  conference_expired,
  bridge_not_provisioned,
  bridge_revoked,
  bridge_not_authorized,  // conference bound to another bridge, or no client certificate
  audit_unavailable,      // fail closed: nothing released
  token_unavailable,
  overloaded,
  rate_limited,  // a source past its request rate (kmsd's admission control)
  internal_error,
};

std::string_view error_code_name(ErrorCode code);  // "envelope_authentication_failed"

// detail: for the client and the audit log, never internals (no CKR names, slot numbers,
// SQL). diagnostic: what the operator needs (the PKCS#11 call and CKR, the database
// error), for the server's log only.
class ProtocolError : public std::runtime_error {
 public:
  ProtocolError(ErrorCode code, std::string detail, std::string diagnostic = {})
      : std::runtime_error(std::string(error_code_name(code)) + ": " + detail +
                           (diagnostic.empty() ? "" : " [" + diagnostic + "]")),
        code_(code),
        detail_(std::move(detail)),
        diagnostic_(std::move(diagnostic)) {}
  ErrorCode code() const noexcept { return code_; }
  const std::string& detail() const noexcept { return detail_; }
  const std::string& diagnostic() const noexcept { return diagnostic_; }

 private:
  ErrorCode code_;
  std::string detail_;
  std::string diagnostic_;
};

}  // namespace kms
