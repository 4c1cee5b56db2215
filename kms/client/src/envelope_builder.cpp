#include "kms/client/envelope_builder.h"

#include <openssl/crypto.h>

#include "kms/client/client_error.h"
#include "kms/client/crypto.h"

namespace kms::client {

Bytes envelope_header(const EnvelopeFields& fields) {
  if (fields.iv.size() != kIvSize) {
    throw ClientError(ClientErrorCode::invalid_argument, "IV must be 12 bytes");
  }
  Bytes header;
  append_u8(header, fields.version);
  append_u8(header, static_cast<std::uint8_t>(fields.type));
  append_u8(header, fields.profile);
  append_u8(header, fields.suite);
  append_u32(header, fields.key_version);
  append_u64(header, fields.timestamp);
  header.insert(header.end(), fields.iv.begin(), fields.iv.end());
  return header;
}

Bytes envelope_aad(ByteView header, std::string_view chair_id, std::string_view responder_id) {
  Bytes aad(header.begin(), header.end());
  append_lp(aad, chair_id);
  append_lp(aad, responder_id);
  return aad;
}

Bytes seal_envelope(ByteView envelope_key, const EnvelopeFields& fields, ByteView nonce) {
  if (nonce.size() != kNonceSize) {
    throw ClientError(ClientErrorCode::invalid_argument, "nonce must be 32 bytes");
  }
  Bytes header = envelope_header(fields);
  Bytes aad = envelope_aad(header, fields.chair_id, fields.responder_id);
  Bytes plaintext(nonce.begin(), nonce.end());
  append_lp(plaintext, fields.encrypted_chair_id);
  append_lp(plaintext, fields.encrypted_responder_id);
  Bytes sealed = aes_gcm_seal(envelope_key, fields.iv, aad, plaintext);
  OPENSSL_cleanse(plaintext.data(), plaintext.size());
  header.insert(header.end(), sealed.begin(), sealed.end());
  return header;
}

}  // namespace kms::client
