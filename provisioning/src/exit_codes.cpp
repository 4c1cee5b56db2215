#include "exit_codes.h"

#include <stdexcept>

#include "errors.h"
#include "hsm/error.h"
#include "tokens/key_check.h"
#include "tokens/key_database.h"
#include "tokens/profile.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace provisioning {
namespace {

// PKCS#11 failures, classified for the exit code.
ExitCode classify(const hsm::Error& error) {
  switch (error.kind()) {
    case hsm::ErrorKind::pkcs11:
    case hsm::ErrorKind::not_logged_in:
    case hsm::ErrorKind::pool_exhausted:
    case hsm::ErrorKind::software:
    case hsm::ErrorKind::not_unique:
      break;
    case hsm::ErrorKind::pin_unavailable:
    case hsm::ErrorKind::invalid_argument:
      return kConfigError;
    case hsm::ErrorKind::not_found:
      return error.function() == "pkcs11 URI" || error.function() == "Module::load" ? kTokenNotFound
                                                                                    : kTokenError;
    case hsm::ErrorKind::module_load:
      return kTokenNotFound;
  }
  if (error.function() == "pkcs11 URI") return kConfigError;  // several tokens match
  switch (error.rv()) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LEN_RANGE:
    case CKR_USER_PIN_NOT_INITIALIZED:
    case CKR_PIN_INVALID:
      return kLoginFailed;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_DEVICE_REMOVED:
      return kTokenNotFound;
    default:
      break;
  }
  const std::string& function = error.function();
  if (function == "C_Initialize" || function == "C_GetFunctionList") return kTokenNotFound;
  return kTokenError;
}

}  // namespace

ExitCode exit_code_of_current_exception() noexcept {
  try {
    throw;
  } catch (const UsageError&) {
    return kUsage;
  } catch (const FileError&) {
    return kUsage;
  } catch (const InvalidIdentityError&) {
    return kInvalidIdentity;
  } catch (const AlreadyExistsError&) {
    return kAlreadyExists;
  } catch (const NotFoundError&) {
    return kNotFound;
  } catch (const BadKeyMaterialError&) {
    return kBadKeyMaterial;
  } catch (const TokenStateError&) {
    return kTokenError;
  } catch (const tokens::ConfigError&) {
    return kConfigError;
  } catch (const tokens::MissingMechanismError&) {
    return kMissingMechanism;
  } catch (const tokens::NotInitialisedError&) {
    return kNotInitialised;
  } catch (const tokens::KeyMismatchError&) {
    return kKeyMismatch;
  } catch (const tokens::DuplicateIdentityError&) {
    return kAlreadyExists;
  } catch (const tokens::DatabaseError&) {
    return kDatabaseError;
  } catch (const hsm::Error& error) {
    return classify(error);
  } catch (const std::invalid_argument&) {
    return kConfigError;  // a malformed value in the configuration
  } catch (...) {
    return kInternalError;
  }
}

}  // namespace provisioning
