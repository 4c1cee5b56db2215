// A CK_MECHANISM with owned parameters, built for the mechanisms the KMS uses.
#pragma once

#include <memory>

#include "hsm/pkcs11.h"
#include "hsm/secure_bytes.h"

namespace hsm {

class Mechanism {
 public:
  // A mechanism without parameters (CKM_AES_KEY_GEN, CKM_AES_KEY_WRAP_PAD, ...).
  explicit Mechanism(CK_MECHANISM_TYPE type);

  // AES-GCM with a 96-bit IV, associated data and a tag length in bits (v2.40 params).
  static Mechanism aes_gcm(ByteView iv, ByteView aad, CK_ULONG tag_bits = 128);
  // CKM_AES_ECB_ENCRYPT_DATA over `data` (a multiple of 16 bytes).
  static Mechanism aes_ecb_encrypt_data(ByteView data);
  // CKM_SP800_108_COUNTER_KDF: [i]_32be || label || 0x00 || context || [L]_32be, the
  // layout that matches OpenSSL's KBKDF in counter mode. prf: CKM_AES_CMAC or
  // CKM_SHA256_HMAC.
  static Mechanism sp800_108_counter(CK_MECHANISM_TYPE prf, ByteView label, ByteView context);

  CK_MECHANISM_TYPE type() const noexcept { return mechanism_.mechanism; }
  CK_MECHANISM* get() noexcept { return &mechanism_; }

  Mechanism(Mechanism&&) noexcept = default;
  Mechanism& operator=(Mechanism&&) noexcept = default;
  Mechanism(const Mechanism&) = delete;
  Mechanism& operator=(const Mechanism&) = delete;
  ~Mechanism();

 private:
  struct Params;  // owns parameter structs and the buffers they point into
  CK_MECHANISM mechanism_{};
  std::unique_ptr<Params> params_;
};

}  // namespace hsm
