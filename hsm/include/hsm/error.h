// One error type for every failure of the PKCS#11 layer: what kind of failure it is, the
// CK_RV where a PKCS#11 call returned one, the call or hsm/ operation that failed and what
// the caller was doing (which key, which subscriber).
#pragma once

#include <stdexcept>
#include <string>

#include "hsm/pkcs11.h"

namespace hsm {

// "CKR_PIN_INCORRECT" for CKR_PIN_INCORRECT; "CKR_0x...": unknown vendor codes.
std::string rv_name(CK_RV rv);

enum class ErrorKind {
  pkcs11,            // a PKCS#11 call returned rv() (the only kind with a CK_RV)
  not_logged_in,     // a session cannot see private objects: the application's login is lost
  not_found,         // no object or token matches what was asked for
  not_unique,        // several objects or tokens match where exactly one must
  pool_exhausted,    // every session stayed busy for the pool's acquire timeout
  invalid_argument,  // a bad pkcs11: URI, module name or path, or init arguments
  module_load,       // p11-kit could not load the module
  pin_unavailable,   // no PIN file or variable, unreadable or empty
  software,          // a host-side computation failed (e.g. a digest in OpenSSL)
};
const char* kind_name(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  // A PKCS#11 call (function, e.g. "C_Decrypt") returned rv.
  Error(CK_RV rv, std::string function, std::string context);
  // A failure of the layer itself; function names the hsm/ operation ("resolve").
  Error(ErrorKind kind, std::string function, std::string context);

  ErrorKind kind() const noexcept { return kind_; }
  // The CK_RV for ErrorKind::pkcs11, CKR_OK for every other kind.
  CK_RV rv() const noexcept { return rv_; }
  const std::string& function() const noexcept { return function_; }
  const std::string& context() const noexcept { return context_; }

  // Only PKCS#11 return codes (and a lost login) ever call for recovery: a key that does not
  // exist or a busy pool can never look like a lost handle.
  // Errors after which the session is gone and a new one must be opened.
  bool session_lost() const noexcept;
  // Errors after which cached object handles must be re-found.
  bool handle_lost() const noexcept;
  // Errors after which the module must be finalised and initialised again.
  bool device_lost() const noexcept;
  bool not_logged_in() const noexcept;
  bool recoverable() const noexcept {
    return session_lost() || handle_lost() || device_lost() || not_logged_in();
  }

  // The same failure with another caller context (e.g. naming the subscriber).
  Error with_context(std::string context) const;

 private:
  ErrorKind kind_;
  CK_RV rv_;
  std::string function_;
  std::string context_;
};

// Throws hsm::Error unless rv == CKR_OK.
void check(CK_RV rv, const char* function, const std::string& context = {});

}  // namespace hsm
