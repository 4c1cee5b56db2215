#include "tokens/token_quirks.h"

#include <stdexcept>

namespace tokens {
namespace {

// PKCS#11 strings are blank-padded, not terminated.
std::string_view padded(const CK_UTF8CHAR* text, std::size_t size) {
  std::string_view view(reinterpret_cast<const char*>(text), size);
  while (!view.empty() && (view.back() == ' ' || view.back() == '\0')) view.remove_suffix(1);
  return view;
}

TokenQuirks softhsm2() {
  TokenQuirks quirks;
  quirks.name = "softhsm2";
  quirks.general_error_is_integrity_failure = true;
  quirks.leaks_destroyed_session_objects = true;
  quirks.serialises_token_object_use = true;
  return quirks;
}

TokenQuirks nss() {
  TokenQuirks quirks;
  quirks.name = "nss";
  quirks.supports_copyable = false;
  quirks.supports_wrap_templates = false;
  return quirks;
}

}  // namespace

TokenQuirks detect_quirks(const CK_INFO& library, const CK_TOKEN_INFO& token) {
  const std::string_view library_maker =
      padded(library.manufacturerID, sizeof library.manufacturerID);
  const std::string_view token_maker = padded(token.manufacturerID, sizeof token.manufacturerID);
  const std::string_view model = padded(token.model, sizeof token.model);
  if (library_maker.starts_with("SoftHSM") || token_maker.starts_with("SoftHSM") ||
      model.starts_with("SoftHSM")) {
    return softhsm2();
  }
  // NSS softoken: "Mozilla Foundation", library "NSS Internal Crypto Services", token
  // model "NSS 3".
  const std::string_view description =
      padded(library.libraryDescription, sizeof library.libraryDescription);
  if (description.starts_with("NSS ") || model.starts_with("NSS ")) return nss();
  return TokenQuirks{};
}

TokenQuirks quirks_by_name(std::string_view name) {
  if (name == "softhsm2") return softhsm2();
  if (name == "nss") return nss();
  if (name == "standard") return TokenQuirks{};
  throw std::invalid_argument("unknown token quirks \"" + std::string(name) +
                              "\" (expected auto, softhsm2, nss or standard)");
}

std::uint64_t recycle_threshold(const TokenQuirks& quirks,
                                std::optional<std::uint64_t> configured) {
  if (configured) return *configured;
  return quirks.leaks_destroyed_session_objects ? kDefaultRecycleAfterObjects : 0;
}

bool is_integrity_failure(const TokenQuirks& quirks, CK_RV rv) noexcept {
  switch (rv) {
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_DATA_INVALID:
    case CKR_DATA_LEN_RANGE:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
    case 0x42UL:  // CKR_AEAD_DECRYPT_FAILED (PKCS#11 3.0; absent from p11-kit 0.24's header)
      return true;
    case CKR_GENERAL_ERROR:
      return quirks.general_error_is_integrity_failure;
    default:
      return false;
  }
}

}  // namespace tokens
