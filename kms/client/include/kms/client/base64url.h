// base64url without padding (RFC 4648 section 5), strict: the JSON encoding of binary fields.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "kms/client/secret.h"

namespace kms::client {

std::string base64url_encode(ByteView data);
// nullopt on padding, whitespace, characters outside [A-Za-z0-9_-], a length of 4k+1, or
// non-zero unused bits in the last character (non-canonical encoding).
std::optional<Bytes> base64url_decode(std::string_view text);

}  // namespace kms::client
