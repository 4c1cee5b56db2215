// IMS public identities (sip:, sips:, tel: URIs) and the two kinds of key holder.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tokens {

enum class IdentityKind { subscriber, bridge };
std::string_view kind_name(IdentityKind kind);  // "subscriber" / "bridge"
std::optional<IdentityKind> parse_kind(std::string_view name);

// Why `identity` is not an acceptable IMS public identity, or nullopt when it is.
// Accepted (canonical forms only, since identities are compared byte for byte and bound
// into AEAD associated data):
//   sip:user@host / sips:user@host  lower-case scheme, RFC 3261 user characters (with %HH
//                                   escapes), host a lower-case DNS name without a
//                                   trailing dot, an IPv4 address or [IPv6];
//                                   no port, parameters or headers;
//   tel:+<digits>                   RFC 3966 global number: '+', 1-15 digits, optional
//                                   visual separators '-', '.', '(', ')'; no parameters.
// At most 256 bytes, no whitespace or control characters.
std::optional<std::string> ims_identity_error(std::string_view identity);
inline bool is_ims_identity(std::string_view identity) {
  return !ims_identity_error(identity).has_value();
}

}  // namespace tokens
