// The protocol KDF and RFC 5649 in software (OpenSSL), written from docs/PROTOCOL.md
// independently of tokens/kdf.cpp: the reference the in-token results are compared with.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokens/profile.h"

namespace testkdf {

using Bytes = std::vector<std::uint8_t>;

// KDF(key, label, context) -> 32 bytes for profile 1 (AES-256-ECB over SHA-256(label ||
// 0x00 || context)) or profile 2 (OpenSSL KBKDF counter mode, CMAC-AES-256).
Bytes kdf(tokens::ProfileId profile, const Bytes& key, const Bytes& label, const Bytes& context);
Bytes wrap_pad(const Bytes& kek, const Bytes& key);        // RFC 5649
Bytes unwrap_pad(const Bytes& kek, const Bytes& wrapped);  // throws on integrity failure
Bytes random_bytes(std::size_t size);
Bytes to_bytes(const std::string& text);
// L(name): the ASCII bytes of "IMS-CONF-KMS/1 " + name (docs/PROTOCOL.md "Notation").
Bytes label(const std::string& name);

}  // namespace testkdf
