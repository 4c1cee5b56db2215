// Small operations the pool and recovery tests run through a SessionPool.
#pragma once

#include <string>

#include "hsm/session_pool.h"
#include "openssl_reference.h"

namespace hsmtest {

// An AES-256 secret key template (session object) with a value known to the test.
inline hsm::AttributeTemplate known_key_template(const hsm::Bytes& value, bool token) {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_TOKEN, token)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, false)
      .set_bool(CKA_ENCRYPT, true)
      .set_bool(CKA_DECRYPT, true)
      .set_bytes(CKA_VALUE, value);
  return t;
}

// A generated private AES-256 token key for encrypt/decrypt, labelled.
inline CK_OBJECT_HANDLE create_token_aes_key(hsm::Session& session, const std::string& label) {
  hsm::Mechanism keygen(CKM_AES_KEY_GEN);
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_ulong(CKA_VALUE_LEN, 32)
      .set_bool(CKA_TOKEN, true)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, false)
      .set_bool(CKA_ENCRYPT, true)
      .set_bool(CKA_DECRYPT, true)
      .set_string(CKA_LABEL, label);
  return session.generate_key(keygen, t);
}

// Encrypts and decrypts with AES-GCM under the token key `ref`, through the pool (with its
// recovery); true if the plaintext came back.
inline bool gcm_round_trip(hsm::SessionPool& pool, const hsm::KeyRef& ref) {
  const hsm::Bytes iv = reference::random_bytes(12);
  const hsm::Bytes aad{'a', 'a', 'd'};
  const hsm::Bytes plaintext = reference::random_bytes(32);
  return pool.run([&](hsm::Session& session) {
    const CK_OBJECT_HANDLE key = pool.resolve(session, ref);
    auto encrypt = hsm::Mechanism::aes_gcm(iv, aad);
    const hsm::Bytes ciphertext = session.encrypt(encrypt, key, plaintext);
    auto decrypt = hsm::Mechanism::aes_gcm(iv, aad);
    const hsm::SecureBytes opened = session.decrypt(decrypt, key, ciphertext);
    return hsm::equal_constant_time(opened.view(), plaintext);
  });
}

}  // namespace hsmtest
