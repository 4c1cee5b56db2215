#include "hsm/error.h"

#include <cstdio>
#include <utility>

namespace hsm {
namespace {

struct RvName {
  CK_RV rv;
  const char* name;
};

#define HSM_RV(name) \
  { name, #name }
constexpr RvName kRvNames[] = {
    HSM_RV(CKR_OK),
    HSM_RV(CKR_CANCEL),
    HSM_RV(CKR_HOST_MEMORY),
    HSM_RV(CKR_SLOT_ID_INVALID),
    HSM_RV(CKR_GENERAL_ERROR),
    HSM_RV(CKR_FUNCTION_FAILED),
    HSM_RV(CKR_ARGUMENTS_BAD),
    HSM_RV(CKR_NO_EVENT),
    HSM_RV(CKR_NEED_TO_CREATE_THREADS),
    HSM_RV(CKR_CANT_LOCK),
    HSM_RV(CKR_ATTRIBUTE_READ_ONLY),
    HSM_RV(CKR_ATTRIBUTE_SENSITIVE),
    HSM_RV(CKR_ATTRIBUTE_TYPE_INVALID),
    HSM_RV(CKR_ATTRIBUTE_VALUE_INVALID),
    HSM_RV(CKR_ACTION_PROHIBITED),
    HSM_RV(CKR_DATA_INVALID),
    HSM_RV(CKR_DATA_LEN_RANGE),
    HSM_RV(CKR_DEVICE_ERROR),
    HSM_RV(CKR_DEVICE_MEMORY),
    HSM_RV(CKR_DEVICE_REMOVED),
    HSM_RV(CKR_ENCRYPTED_DATA_INVALID),
    HSM_RV(CKR_ENCRYPTED_DATA_LEN_RANGE),
    HSM_RV(CKR_FUNCTION_CANCELED),
    HSM_RV(CKR_FUNCTION_NOT_PARALLEL),
    HSM_RV(CKR_FUNCTION_NOT_SUPPORTED),
    HSM_RV(CKR_KEY_HANDLE_INVALID),
    HSM_RV(CKR_KEY_SIZE_RANGE),
    HSM_RV(CKR_KEY_TYPE_INCONSISTENT),
    HSM_RV(CKR_KEY_NOT_NEEDED),
    HSM_RV(CKR_KEY_CHANGED),
    HSM_RV(CKR_KEY_NEEDED),
    HSM_RV(CKR_KEY_INDIGESTIBLE),
    HSM_RV(CKR_KEY_FUNCTION_NOT_PERMITTED),
    HSM_RV(CKR_KEY_NOT_WRAPPABLE),
    HSM_RV(CKR_KEY_UNEXTRACTABLE),
    HSM_RV(CKR_MECHANISM_INVALID),
    HSM_RV(CKR_MECHANISM_PARAM_INVALID),
    HSM_RV(CKR_OBJECT_HANDLE_INVALID),
    HSM_RV(CKR_OPERATION_ACTIVE),
    HSM_RV(CKR_OPERATION_NOT_INITIALIZED),
    HSM_RV(CKR_PIN_INCORRECT),
    HSM_RV(CKR_PIN_INVALID),
    HSM_RV(CKR_PIN_LEN_RANGE),
    HSM_RV(CKR_PIN_EXPIRED),
    HSM_RV(CKR_PIN_LOCKED),
    HSM_RV(CKR_SESSION_CLOSED),
    HSM_RV(CKR_SESSION_COUNT),
    HSM_RV(CKR_SESSION_HANDLE_INVALID),
    HSM_RV(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    HSM_RV(CKR_SESSION_READ_ONLY),
    HSM_RV(CKR_SESSION_EXISTS),
    HSM_RV(CKR_SESSION_READ_ONLY_EXISTS),
    HSM_RV(CKR_SESSION_READ_WRITE_SO_EXISTS),
    HSM_RV(CKR_SIGNATURE_INVALID),
    HSM_RV(CKR_SIGNATURE_LEN_RANGE),
    HSM_RV(CKR_TEMPLATE_INCOMPLETE),
    HSM_RV(CKR_TEMPLATE_INCONSISTENT),
    HSM_RV(CKR_TOKEN_NOT_PRESENT),
    HSM_RV(CKR_TOKEN_NOT_RECOGNIZED),
    HSM_RV(CKR_TOKEN_WRITE_PROTECTED),
    HSM_RV(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
    HSM_RV(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    HSM_RV(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
    HSM_RV(CKR_USER_ALREADY_LOGGED_IN),
    HSM_RV(CKR_USER_NOT_LOGGED_IN),
    HSM_RV(CKR_USER_PIN_NOT_INITIALIZED),
    HSM_RV(CKR_USER_TYPE_INVALID),
    HSM_RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    HSM_RV(CKR_USER_TOO_MANY_TYPES),
    HSM_RV(CKR_WRAPPED_KEY_INVALID),
    HSM_RV(CKR_WRAPPED_KEY_LEN_RANGE),
    HSM_RV(CKR_WRAPPING_KEY_HANDLE_INVALID),
    HSM_RV(CKR_WRAPPING_KEY_SIZE_RANGE),
    HSM_RV(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
    HSM_RV(CKR_RANDOM_SEED_NOT_SUPPORTED),
    HSM_RV(CKR_RANDOM_NO_RNG),
    HSM_RV(CKR_DOMAIN_PARAMS_INVALID),
    HSM_RV(CKR_CURVE_NOT_SUPPORTED),
    HSM_RV(CKR_BUFFER_TOO_SMALL),
    HSM_RV(CKR_SAVED_STATE_INVALID),
    HSM_RV(CKR_INFORMATION_SENSITIVE),
    HSM_RV(CKR_STATE_UNSAVEABLE),
    HSM_RV(CKR_CRYPTOKI_NOT_INITIALIZED),
    HSM_RV(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    HSM_RV(CKR_MUTEX_BAD),
    HSM_RV(CKR_MUTEX_NOT_LOCKED),
    HSM_RV(CKR_NEW_PIN_MODE),
    HSM_RV(CKR_NEXT_OTP),
    HSM_RV(CKR_EXCEEDED_MAX_ITERATIONS),
    HSM_RV(CKR_FIPS_SELF_TEST_FAILED),
    HSM_RV(CKR_LIBRARY_LOAD_FAILED),
    HSM_RV(CKR_PIN_TOO_WEAK),
    HSM_RV(CKR_PUBLIC_KEY_INVALID),
    HSM_RV(CKR_FUNCTION_REJECTED),
};
#undef HSM_RV

std::string compose(ErrorKind kind, CK_RV rv, const std::string& function,
                    const std::string& context) {
  std::string message = function + " failed: ";
  message += kind == ErrorKind::pkcs11 ? rv_name(rv) : std::string(kind_name(kind));
  if (!context.empty()) message += " (" + context + ")";
  return message;
}

}  // namespace

std::string rv_name(CK_RV rv) {
  for (const auto& entry : kRvNames) {
    if (entry.rv == rv) return entry.name;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "CKR_0x%08lX", static_cast<unsigned long>(rv));
  return buffer;
}

const char* kind_name(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::pkcs11:
      return "PKCS#11 error";
    case ErrorKind::not_logged_in:
      return "not logged in";
    case ErrorKind::not_found:
      return "not found";
    case ErrorKind::not_unique:
      return "not unique";
    case ErrorKind::pool_exhausted:
      return "no session available";
    case ErrorKind::invalid_argument:
      return "invalid argument";
    case ErrorKind::module_load:
      return "module not loaded";
    case ErrorKind::pin_unavailable:
      return "PIN unavailable";
    case ErrorKind::software:
      return "software failure";
  }
  return "unknown";
}

Error::Error(CK_RV rv, std::string function, std::string context)
    : std::runtime_error(compose(ErrorKind::pkcs11, rv, function, context)),
      kind_(ErrorKind::pkcs11),
      rv_(rv),
      function_(std::move(function)),
      context_(std::move(context)) {}

Error::Error(ErrorKind kind, std::string function, std::string context)
    : std::runtime_error(compose(kind, CKR_OK, function, context)),
      kind_(kind),
      rv_(CKR_OK),
      function_(std::move(function)),
      context_(std::move(context)) {}

Error Error::with_context(std::string context) const {
  return kind_ == ErrorKind::pkcs11 ? Error(rv_, function_, std::move(context))
                                    : Error(kind_, function_, std::move(context));
}

bool Error::session_lost() const noexcept {
  return kind_ == ErrorKind::pkcs11 &&
         (rv_ == CKR_SESSION_HANDLE_INVALID || rv_ == CKR_SESSION_CLOSED);
}

bool Error::handle_lost() const noexcept {
  return kind_ == ErrorKind::pkcs11 &&
         (rv_ == CKR_OBJECT_HANDLE_INVALID || rv_ == CKR_KEY_HANDLE_INVALID ||
          rv_ == CKR_WRAPPING_KEY_HANDLE_INVALID || rv_ == CKR_UNWRAPPING_KEY_HANDLE_INVALID);
}

bool Error::device_lost() const noexcept {
  return kind_ == ErrorKind::pkcs11 &&
         (rv_ == CKR_DEVICE_ERROR || rv_ == CKR_DEVICE_REMOVED || rv_ == CKR_TOKEN_NOT_PRESENT ||
          rv_ == CKR_CRYPTOKI_NOT_INITIALIZED);
}

bool Error::not_logged_in() const noexcept {
  return kind_ == ErrorKind::not_logged_in ||
         (kind_ == ErrorKind::pkcs11 && rv_ == CKR_USER_NOT_LOGGED_IN);
}

void check(CK_RV rv, const char* function, const std::string& context) {
  if (rv != CKR_OK) throw Error(rv, function, context);
}

}  // namespace hsm
