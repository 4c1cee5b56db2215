// OpenSSL computing in software what the tests ask the token to compute: the reference
// the token's results are compared with.
#pragma once

#include <string>

#include "hsm/secure_bytes.h"

namespace hsmtest::reference {

hsm::Bytes random_bytes(std::size_t n);
hsm::Bytes sha256(const hsm::Bytes& data);
// AES-256-ECB without padding (data: a multiple of 16 bytes).
hsm::Bytes aes256_ecb(const hsm::Bytes& key, const hsm::Bytes& data);
// RFC 5649 AES key wrap with padding (EVP_aes_256_wrap_pad).
hsm::Bytes kwp_wrap(const hsm::Bytes& kek, const hsm::Bytes& key);
hsm::Bytes kwp_unwrap(const hsm::Bytes& kek, const hsm::Bytes& wrapped);  // throws on failure
// SP 800-108 counter KDF (OpenSSL KBKDF, CMAC over AES-256-CBC): [i]||label||0x00||context||[L].
hsm::Bytes kbkdf_cmac(const hsm::Bytes& key, const hsm::Bytes& label, const hsm::Bytes& context,
                      std::size_t length);
// AES-256-GCM, 16-byte tag appended / expected at the end.
hsm::Bytes gcm_encrypt(const hsm::Bytes& key, const hsm::Bytes& iv, const hsm::Bytes& aad,
                       const hsm::Bytes& plaintext);
hsm::Bytes gcm_decrypt(const hsm::Bytes& key, const hsm::Bytes& iv, const hsm::Bytes& aad,
                       const hsm::Bytes& ciphertext_and_tag);  // throws on a bad tag

}  // namespace hsmtest::reference
