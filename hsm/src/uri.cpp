#include "hsm/uri.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <p11-kit/uri.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "call.h"
#include "hsm/error.h"

namespace hsm {

struct TokenUri::Impl {
  P11KitUri* uri = nullptr;
  ~Impl() {
    if (uri != nullptr) p11_kit_uri_free(uri);
  }
};

namespace {

std::optional<std::string> optional_string(const char* text) {
  if (text == nullptr) return std::nullopt;
  return std::string(text);
}

// The attribute names RFC 7512 and p11-kit define (path and query), for naming the others.
std::string unrecognised_attributes(std::string_view text) {
  static constexpr std::string_view kKnown[] = {"token",
                                                "manufacturer",
                                                "serial",
                                                "model",
                                                "library-manufacturer",
                                                "library-description",
                                                "library-version",
                                                "object",
                                                "type",
                                                "id",
                                                "slot-description",
                                                "slot-manufacturer",
                                                "slot-id",
                                                "pin-source",
                                                "pin-value",
                                                "module-name",
                                                "module-path"};
  if (text.starts_with("pkcs11:")) text.remove_prefix(7);
  std::string unknown;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t end = std::min(text.find_first_of(";?&", begin), text.size());
    const std::string_view attribute = text.substr(begin, end - begin);
    const std::string_view name = attribute.substr(0, attribute.find('='));
    if (!name.empty() && !name.starts_with("x-") &&
        std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
      unknown += (unknown.empty() ? "" : ", ") + std::string(name);
    }
    begin = end + 1;
  }
  return unknown;
}

std::string describe(const TokenDescription& token) {
  return "'" + token.label + "' (manufacturer '" + token.manufacturer + "', serial '" +
         token.serial + "', slot " + std::to_string(token.slot) + ")";
}

std::string describe_all(const std::vector<TokenDescription>& tokens) {
  if (tokens.empty()) return "no tokens present";
  std::string text;
  for (const auto& token : tokens) text += (text.empty() ? "" : ", ") + describe(token);
  return text;
}

}  // namespace

TokenUri TokenUri::parse(const std::string& text) {
  TokenUri result;
  result.impl_ = std::make_unique<Impl>();
  result.impl_->uri = p11_kit_uri_new();
  result.text_ = text;
  const int code = p11_kit_uri_parse(text.c_str(), P11_KIT_URI_FOR_ANY, result.impl_->uri);
  if (code != P11_KIT_URI_OK) {
    throw Error(ErrorKind::invalid_argument, "pkcs11 URI",
                "cannot parse '" + text + "': " + p11_kit_uri_message(code));
  }
  // p11-kit ignores attributes it does not know (query ones without a word), so "tokn=kms"
  // would silently match every token: name them instead. Vendor attributes ("x-...") pass.
  const std::string unknown = unrecognised_attributes(text);
  if (!unknown.empty()) {
    throw Error(ErrorKind::invalid_argument, "pkcs11 URI",
                "'" + text + "' has attributes this KMS does not recognise: " + unknown);
  }
  return result;
}

TokenUri::TokenUri(TokenUri&&) noexcept = default;
TokenUri& TokenUri::operator=(TokenUri&&) noexcept = default;
TokenUri::~TokenUri() = default;

TokenUri::TokenUri(const TokenUri& other) : text_(other.text_) {
  if (other.impl_) *this = parse(other.text_);
}

TokenUri& TokenUri::operator=(const TokenUri& other) {
  if (this != &other) *this = TokenUri(other);
  return *this;
}

bool TokenUri::matches(const CK_TOKEN_INFO& token) const {
  return p11_kit_uri_match_token_info(impl_->uri, &token) == 1;
}

TokenDescription TokenUri::select(const Module& module) const {
  CK_INFO module_info{};
  check(HSM_CALL(module, C_GetInfo, &module_info), "C_GetInfo");
  if (p11_kit_uri_match_module_info(impl_->uri, &module_info) != 1) {
    throw Error(ErrorKind::not_found, "pkcs11 URI",
                "'" + text_ + "' names a different library than " + module.library_path());
  }
  const CK_SLOT_ID wanted_slot = p11_kit_uri_get_slot_id(impl_->uri);
  const auto tokens = module.tokens();
  std::vector<TokenDescription> candidates;
  for (const auto& token : tokens) {
    if (wanted_slot != static_cast<CK_SLOT_ID>(-1) && token.slot != wanted_slot) continue;
    CK_SLOT_INFO slot_info{};
    if (HSM_CALL(module, C_GetSlotInfo, token.slot, &slot_info) == CKR_OK &&
        p11_kit_uri_match_slot_info(impl_->uri, &slot_info) != 1) {
      continue;
    }
    if (matches(token.info)) candidates.push_back(token);
  }
  if (candidates.empty()) {
    throw Error(ErrorKind::not_found, "pkcs11 URI",
                "no token matches '" + text_ + "'; tokens in " + module.library_path() + ": " +
                    describe_all(tokens));
  }
  if (candidates.size() > 1) {
    throw Error(ErrorKind::not_unique, "pkcs11 URI",
                "'" + text_ + "' matches several tokens, add serial= or slot-id=: " +
                    describe_all(candidates));
  }
  return candidates.front();
}

std::optional<std::string> TokenUri::object_label() const {
  CK_ATTRIBUTE* label = p11_kit_uri_get_attribute(impl_->uri, CKA_LABEL);
  if (label == nullptr) return std::nullopt;
  return std::string(static_cast<const char*>(label->pValue), label->ulValueLen);
}

std::optional<Bytes> TokenUri::object_id() const {
  CK_ATTRIBUTE* id = p11_kit_uri_get_attribute(impl_->uri, CKA_ID);
  if (id == nullptr) return std::nullopt;
  const auto* bytes = static_cast<const std::uint8_t*>(id->pValue);
  return Bytes(bytes, bytes + id->ulValueLen);
}

std::optional<SecureString> TokenUri::pin_value() const {
  const char* pin = p11_kit_uri_get_pin_value(impl_->uri);
  if (pin == nullptr) return std::nullopt;
  return SecureString(pin);
}

std::optional<std::string> TokenUri::pin_source() const {
  return optional_string(p11_kit_uri_get_pin_source(impl_->uri));
}

std::optional<std::string> TokenUri::module_path() const {
  return optional_string(p11_kit_uri_get_module_path(impl_->uri));
}

std::optional<std::string> TokenUri::module_name() const {
  return optional_string(p11_kit_uri_get_module_name(impl_->uri));
}

namespace {

std::string octal_mode(unsigned mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", mode & 07777U);
  return text;
}

bool insecure_pin_file_allowed() {
  const char* value = std::getenv(kAllowInsecurePinFileVariable);
  return value != nullptr && std::string_view(value) == "1";
}

}  // namespace

SecureString PinSource::read(std::string* warning) const {
  if (file) {
    std::string path = *file;
    if (path.rfind("file://", 0) == 0) {
      path.erase(0, 7);
    } else if (path.rfind("file:", 0) == 0) {
      path.erase(0, 5);
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
      throw Error(ErrorKind::pin_unavailable, "pin source",
                  "cannot read PIN file " + path + ": " + std::strerror(errno));
    }
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    // The mode of the file opened, not of the path (which may change in between).
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
      throw Error(ErrorKind::pin_unavailable, "pin source",
                  "cannot read PIN file " + path + ": " + std::strerror(errno));
    }
    if ((info.st_mode & 077) != 0) {
      const std::string problem = "PIN file " + path + " has mode " + octal_mode(info.st_mode) +
                                  ": readable or writable by group or others";
      if (!insecure_pin_file_allowed()) {
        throw Error(ErrorKind::pin_unavailable, "pin source",
                    problem + "; chmod 600 it, or set " + kAllowInsecurePinFileVariable +
                        "=1 to accept it");
      }
      const std::string accepted =
          problem + "; accepted because " + kAllowInsecurePinFileVariable + "=1";
      if (warning != nullptr) {
        *warning = accepted;
      } else {
        std::fprintf(stderr, "warning: %s\n", accepted.c_str());
      }
    }
    // The first line; at most 4 KiB is read (a PIN is far shorter).
    std::string text(4096, '\0');
    std::size_t length = 0;
    while (length < text.size()) {
      const ssize_t got = ::read(fd, text.data() + length, text.size() - length);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        OPENSSL_cleanse(text.data(), text.size());
        throw Error(ErrorKind::pin_unavailable, "pin source",
                    "cannot read PIN file " + path + ": " + std::strerror(errno));
      }
      if (got == 0) break;
      length += static_cast<std::size_t>(got);
      if (text.find('\n') < length) break;
    }
    std::size_t end = std::min(text.find('\n'), length);
    if (end > 0 && text[end - 1] == '\r') --end;
    SecureString pin(std::string(text.data(), end));
    OPENSSL_cleanse(text.data(), text.size());
    if (pin.empty())
      throw Error(ErrorKind::pin_unavailable, "pin source", "PIN file " + path + " is empty");
    return pin;
  }
  if (environment_variable) {
    const char* value = std::getenv(environment_variable->c_str());
    if (value == nullptr || *value == '\0') {
      throw Error(ErrorKind::pin_unavailable, "pin source",
                  "environment variable " + *environment_variable + " is not set");
    }
    return SecureString(value);
  }
  throw Error(ErrorKind::pin_unavailable, "pin source",
              "no PIN file or environment variable given");
}

}  // namespace hsm
