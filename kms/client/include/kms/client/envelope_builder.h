// Building envelopes E_X(R_X, ID-A, ID-B) (docs/PROTOCOL.md "Envelope"). UeClient is the
// normal entry point; seal_envelope is the low-level form tests use to build hostile ones.
#pragma once

#include <cstdint>
#include <string>

#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::client {

struct EnvelopeFields {
  std::uint8_t version = kProtocolVersion;
  MessageType type = MessageType::chair_invite;
  std::uint8_t profile = 1;
  std::uint8_t suite = 1;
  std::uint32_t key_version = 1;
  std::uint64_t timestamp = 0;  // Unix seconds
  Bytes iv;                     // 12 bytes
  std::string chair_id;         // plain IDs: bound as associated data
  std::string responder_id;
  std::string encrypted_chair_id;  // IDs inside the plaintext (normally equal to the plain ones)
  std::string encrypted_responder_id;
};

// header (28 bytes) of the envelope.
Bytes envelope_header(const EnvelopeFields& fields);
// AAD = header || lp(ID-A) || lp(ID-B)
Bytes envelope_aad(ByteView header, std::string_view chair_id, std::string_view responder_id);
// header || AES-256-GCM(envelope_key, iv, AAD, R || lp(ID-A') || lp(ID-B')).
Bytes seal_envelope(ByteView envelope_key, const EnvelopeFields& fields, ByteView nonce);

}  // namespace kms::client
