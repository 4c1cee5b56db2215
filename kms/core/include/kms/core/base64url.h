// base64url without padding (RFC 4648 section 5) for the JSON API's binary fields.
#pragma once

#include <string>
#include <string_view>

#include "hsm/secure_bytes.h"
#include "kms/services.h"

namespace kms {

std::string base64url_encode(hsm::ByteView data);
// Strict: rejects '=' padding, whitespace, characters outside [A-Za-z0-9_-], a length of
// 4k+1, non-zero unused bits (non-canonical), and more than max_decoded bytes. Throws
// ProtocolError(malformed_request) naming the field.
Bytes base64url_decode(std::string_view text, std::string_view field,
                       std::size_t max_decoded = 4096);

}  // namespace kms
