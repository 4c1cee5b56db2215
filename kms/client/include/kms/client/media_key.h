// An SRTP master key and salt received from the KMS, with what identifies it.
#pragma once

#include <cstdint>

#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::client {

struct MediaKey {
  Bytes conference_id;  // 16 bytes
  Bytes key_id;         // 8 bytes
  std::uint8_t suite = 0;
  Secret key;          // the 32-byte K as unwrapped
  Secret master_key;   // K[0..16)
  Secret master_salt;  // K[16..30) or K[16..28), per suite
};

// Splits K per suite (docs/PROTOCOL.md "SRTP suites").
MediaKey make_media_key(Bytes conference_id, Bytes key_id, std::uint8_t suite, Secret key);

}  // namespace kms::client
