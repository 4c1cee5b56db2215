// The primitives of docs/PROTOCOL.md in software (OpenSSL 3): the two profile KDFs,
// AES-256-GCM and RFC 5649 key wrap with padding.
#pragma once

#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::client {

// KDF(key, label, context) -> 32 bytes, per profile:
//   1: AES-256-ECB(key, SHA-256(label || 0x00 || context))
//   2: SP 800-108 counter mode, PRF CMAC-AES-256 (OpenSSL KBKDF, salt=label, info=context)
Secret kdf(Profile profile, ByteView key, ByteView label, ByteView context);

Secret random_bytes(std::size_t size);

// AES-256-GCM with a 12-byte IV; returns ciphertext || 16-byte tag.
Bytes aes_gcm_seal(ByteView key, ByteView iv, ByteView aad, ByteView plaintext);
// Throws ClientError(unwrap_failed) when the tag does not verify.
Secret aes_gcm_open(ByteView key, ByteView iv, ByteView aad, ByteView sealed);

// RFC 5649 (EVP_aes_256_wrap_pad).
Bytes aes_key_wrap_pad(ByteView kek, ByteView key);
// Throws ClientError(unwrap_failed) when the integrity check fails.
Secret aes_key_unwrap_pad(ByteView kek, ByteView wrapped);

}  // namespace kms::client
