// RFC 7512 pkcs11: URIs, parsed and matched with p11-kit's URI API.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hsm/module.h"
#include "hsm/secure_bytes.h"

namespace hsm {

class TokenUri {
 public:
  // Throws hsm::Error (ErrorKind::invalid_argument, function "pkcs11 URI") on a malformed URI.
  static TokenUri parse(const std::string& uri);

  bool matches(const CK_TOKEN_INFO& token) const;
  // The one token this URI selects. Throws hsm::Error(ErrorKind::not_found) listing the
  // tokens that do exist when none matches, or ErrorKind::not_unique naming the candidates
  // when several do. Neither is a PKCS#11 code, so neither can trigger device recovery.
  TokenDescription select(const Module& module) const;

  // Object attributes, when present ("object=", "id=", "type=").
  std::optional<std::string> object_label() const;
  std::optional<Bytes> object_id() const;
  // PIN attributes: "pin-value=" and "pin-source=" (a file path or file: URI).
  std::optional<SecureString> pin_value() const;
  std::optional<std::string> pin_source() const;
  // "module-path=" / "module-name=" query attributes, when present.
  std::optional<std::string> module_path() const;
  std::optional<std::string> module_name() const;

  const std::string& text() const noexcept { return text_; }

  TokenUri(TokenUri&&) noexcept;
  TokenUri& operator=(TokenUri&&) noexcept;
  TokenUri(const TokenUri&);
  TokenUri& operator=(const TokenUri&);
  ~TokenUri();

 private:
  TokenUri() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string text_;
};

// Set to "1", accepts a PIN file that group or others may read or write (with a warning).
inline constexpr const char* kAllowInsecurePinFileVariable = "KMS_ALLOW_INSECURE_PIN_FILE";

// Where a PIN comes from: a file (first line, trailing newline dropped) or an environment
// variable. Never a command-line argument.
struct PinSource {
  std::optional<std::string> file;
  std::optional<std::string> environment_variable;
  // The PIN, or hsm::Error(ErrorKind::pin_unavailable, "pin source") saying what is missing.
  // A PIN file whose mode gives group or others any access (mode & 077) is refused, naming
  // the file and its mode, unless KMS_ALLOW_INSECURE_PIN_FILE=1: then it is read and the
  // warning is stored in *warning (or, with no place for it, printed on stderr).
  SecureString read(std::string* warning = nullptr) const;
};

}  // namespace hsm
