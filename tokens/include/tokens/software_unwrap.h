// RFC 5649 unwrap in software (OpenSSL), for values the KMS may read: a public check value
// wrapped by the token (key check values), or a new root key wrapped under a one-time key
// of known value (kms-provision --insecure-plaintext-export). Never for a KMS key.
#pragma once

#include <optional>

#include "hsm/secure_bytes.h"

namespace tokens {

// nullopt when `wrapped` does not unwrap under `kek` (AES-256).
std::optional<hsm::SecureBytes> software_unwrap(hsm::ByteView kek, hsm::ByteView wrapped);

}  // namespace tokens
