// Parsing and opening responses E_X(R_X, K) (docs/PROTOCOL.md "Response").
#pragma once

#include <cstdint>
#include <string_view>

#include "kms/client/media_key.h"
#include "kms/client/protocol.h"

namespace kms::client {

struct ResponseFields {
  std::uint8_t version = 0;
  std::uint8_t type = 0;
  std::uint8_t profile = 0;
  std::uint8_t suite = 0;
  Bytes conference_id;  // 16
  Bytes key_id;         // 8
  Bytes wrapped;        // 40
};

// Strict layout check only (no crypto). Throws ClientError(malformed_message).
ResponseFields parse_response(ByteView response);

}  // namespace kms::client
