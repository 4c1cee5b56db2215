// Strict parsing and serialisation of envelopes and responses (docs/PROTOCOL.md).
// Every malformed input is a kms::ProtocolError with a typed code, never undefined
// behaviour: lengths are checked before any field is read.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "hsm/secure_bytes.h"
#include "kms/core/protocol.h"

namespace kms::protocol {

struct Envelope {
  std::uint8_t version = kVersion;
  MessageType type = MessageType::chair_invite;
  std::uint8_t profile = 0;
  std::uint8_t suite = 0;
  std::uint32_t key_version = 0;
  std::uint64_t timestamp = 0;
  Bytes iv;      // 12 bytes
  Bytes sealed;  // ciphertext || 16-byte tag
};

// Checks, in this order: non-empty (malformed_request), version (unsupported_version),
// type is an envelope type (unknown_message_type; a response type is a reflection), length
// within [kMinEnvelopeSize, kMaxEnvelopeSize] (malformed_request: truncated / over-long).
Envelope parse_envelope(ByteView bytes);
// The size of an envelope for these plain IDs: 28 + 32 + lp(ID-A) + lp(ID-B) + 16, i.e.
// 80 + len(ID-A) + len(ID-B) (its plaintext is R || lp(ID-A) || lp(ID-B)).
std::size_t envelope_size_for(std::string_view chair_id, std::string_view responder_id);
// parse_envelope(bytes), then: exactly envelope_size_for(chair_id, responder_id) bytes
// (malformed_request: the envelope cannot hold the plain IDs). Nothing cryptographic: an
// envelope of the wrong size is refused before any token call.
Envelope parse_envelope(ByteView bytes, std::string_view chair_id, std::string_view responder_id);
Bytes serialize_envelope(const Envelope& envelope);
Bytes envelope_header(const Envelope& envelope);  // bytes [0, 28)
// AAD = header || lp(ID-A) || lp(ID-B)
Bytes envelope_aad(const Envelope& envelope, std::string_view chair_id,
                   std::string_view responder_id);

// The decrypted plaintext R || lp(ID-A) || lp(ID-B), parsed strictly (exact length).
struct EnvelopePlaintext {
  hsm::SecureBytes nonce;  // 32 bytes
  std::string chair_id;
  std::string responder_id;
};
// Throws ProtocolError(identity_mismatch) when the authenticated plaintext does not have
// the layout: the sender sealed something other than R and the two IDs.
EnvelopePlaintext parse_envelope_plaintext(ByteView plaintext);

struct Response {
  std::uint8_t version = kVersion;
  MessageType type = MessageType::chair_response;
  std::uint8_t profile = 0;
  std::uint8_t suite = 0;
  Bytes conference_id;  // 16
  Bytes key_id;         // 8
  Bytes wrapped;        // 40
};
// Strict: exactly kResponseSize bytes, a response type, wrapped length field 40.
Response parse_response(ByteView bytes);
Bytes serialize_response(const Response& response);

}  // namespace kms::protocol
