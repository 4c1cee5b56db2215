// base64url without padding (RFC 4648 section 5) for the JSON API's binary fields.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "kms/services.h"

namespace kms {

// std::span, not hsm::ByteView: the wire format (kms-client) links this without hsm/.
std::string base64url_encode(std::span<const std::uint8_t> data);
// Strict: rejects '=' padding, whitespace, characters outside [A-Za-z0-9_-], a length of
// 4k+1, non-zero unused bits (non-canonical), and more than max_decoded bytes. Throws
// ProtocolError(malformed_request) naming the field.
Bytes base64url_decode(std::string_view text, std::string_view field,
                       std::size_t max_decoded = 4096);

}  // namespace kms
