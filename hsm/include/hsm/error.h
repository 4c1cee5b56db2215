// One error type for every PKCS#11 failure: the CK_RV, the function that returned it and
// what the caller was doing (which key, which subscriber).
#pragma once

#include <stdexcept>
#include <string>

#include "hsm/pkcs11.h"

namespace hsm {

// "CKR_PIN_INCORRECT" for CKR_PIN_INCORRECT; "CKR_0x...": unknown vendor codes.
std::string rv_name(CK_RV rv);

class Error : public std::runtime_error {
 public:
  // function: the PKCS#11 call ("C_Decrypt"), or the hsm/ operation for non-CKR errors.
  Error(CK_RV rv, std::string function, std::string context);

  CK_RV rv() const noexcept { return rv_; }
  const std::string& function() const noexcept { return function_; }
  const std::string& context() const noexcept { return context_; }

  // Errors after which the session is gone and a new one must be opened.
  bool session_lost() const noexcept;
  // Errors after which cached object handles must be re-found.
  bool handle_lost() const noexcept;
  // Errors after which the module must be finalised and initialised again.
  bool device_lost() const noexcept;
  bool not_logged_in() const noexcept;

 private:
  CK_RV rv_;
  std::string function_;
  std::string context_;
};

// Throws hsm::Error unless rv == CKR_OK.
void check(CK_RV rv, const char* function, const std::string& context = {});

}  // namespace hsm
