#include "kms/core/envelope_codec.h"

namespace kms::protocol {
namespace {

[[noreturn]] void malformed(const std::string& what) {
  throw ProtocolError(ErrorCode::malformed_request, what);
}

std::uint32_t read_u32(ByteView bytes, std::size_t offset) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < 4; ++i) value = (value << 8) | bytes[offset + i];
  return value;
}

std::uint64_t read_u64(ByteView bytes, std::size_t offset) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < 8; ++i) value = (value << 8) | bytes[offset + i];
  return value;
}

std::uint16_t read_u16(ByteView bytes, std::size_t offset) {
  return static_cast<std::uint16_t>((bytes[offset] << 8) | bytes[offset + 1]);
}

// Reads lp(x) at offset; advances offset. Throws identity_mismatch when it overruns.
std::string read_lp_identity(ByteView bytes, std::size_t& offset) {
  if (bytes.size() - offset < 2) {
    throw ProtocolError(ErrorCode::identity_mismatch, "encrypted identity field truncated");
  }
  const std::size_t size = read_u16(bytes, offset);
  offset += 2;
  if (bytes.size() - offset < size) {
    throw ProtocolError(ErrorCode::identity_mismatch, "encrypted identity overruns plaintext");
  }
  std::string value(reinterpret_cast<const char*>(bytes.data() + offset), size);
  offset += size;
  return value;
}

}  // namespace

Envelope parse_envelope(ByteView bytes) {
  if (bytes.empty()) malformed("empty envelope");
  if (bytes[0] != kVersion) {
    throw ProtocolError(ErrorCode::unsupported_version,
                        "envelope version " + std::to_string(bytes[0]));
  }
  if (bytes.size() < 2)
    malformed("envelope truncated (" + std::to_string(bytes.size()) + " bytes)");
  if (bytes[1] != static_cast<std::uint8_t>(MessageType::chair_invite) &&
      bytes[1] != static_cast<std::uint8_t>(MessageType::responder_request)) {
    throw ProtocolError(ErrorCode::unknown_message_type,
                        "not an envelope type: " + std::to_string(bytes[1]));
  }
  if (bytes.size() < kMinEnvelopeSize) {
    malformed("envelope truncated (" + std::to_string(bytes.size()) + " bytes, minimum " +
              std::to_string(kMinEnvelopeSize) + ")");
  }
  if (bytes.size() > kMaxEnvelopeSize) {
    malformed("envelope over-long (" + std::to_string(bytes.size()) + " bytes, maximum " +
              std::to_string(kMaxEnvelopeSize) + ")");
  }
  Envelope envelope;
  envelope.version = bytes[0];
  envelope.type = static_cast<MessageType>(bytes[1]);
  envelope.profile = bytes[2];
  envelope.suite = bytes[3];
  envelope.key_version = read_u32(bytes, 4);
  envelope.timestamp = read_u64(bytes, 8);
  envelope.iv.assign(bytes.begin() + 16, bytes.begin() + 28);
  envelope.sealed.assign(bytes.begin() + 28, bytes.end());
  return envelope;
}

std::size_t envelope_size_for(std::string_view chair_id, std::string_view responder_id) {
  return kEnvelopeHeaderSize + kNonceSize + (2 + chair_id.size()) + (2 + responder_id.size()) +
         kTagSize;
}

Envelope parse_envelope(ByteView bytes, std::string_view chair_id, std::string_view responder_id) {
  Envelope envelope = parse_envelope(bytes);
  const std::size_t expected = envelope_size_for(chair_id, responder_id);
  if (bytes.size() != expected) {
    malformed("envelope is " + std::to_string(bytes.size()) + " bytes, the plain IDs make it " +
              std::to_string(expected));
  }
  return envelope;
}

Bytes envelope_header(const Envelope& envelope) {
  if (envelope.iv.size() != kIvSize) malformed("IV must be 12 bytes");
  Bytes out;
  append_u8(out, envelope.version);
  append_u8(out, static_cast<std::uint8_t>(envelope.type));
  append_u8(out, envelope.profile);
  append_u8(out, envelope.suite);
  append_u32(out, envelope.key_version);
  append_u64(out, envelope.timestamp);
  out.insert(out.end(), envelope.iv.begin(), envelope.iv.end());
  return out;
}

Bytes serialize_envelope(const Envelope& envelope) {
  Bytes out = envelope_header(envelope);
  out.insert(out.end(), envelope.sealed.begin(), envelope.sealed.end());
  return out;
}

Bytes envelope_aad(const Envelope& envelope, std::string_view chair_id,
                   std::string_view responder_id) {
  Bytes aad = envelope_header(envelope);
  append_lp(aad, chair_id);
  append_lp(aad, responder_id);
  return aad;
}

EnvelopePlaintext parse_envelope_plaintext(ByteView plaintext) {
  if (plaintext.size() < kNonceSize) {
    throw ProtocolError(ErrorCode::identity_mismatch, "plaintext shorter than the nonce");
  }
  EnvelopePlaintext out;
  out.nonce = hsm::SecureBytes(plaintext.subspan(0, kNonceSize));
  std::size_t offset = kNonceSize;
  out.chair_id = read_lp_identity(plaintext, offset);
  out.responder_id = read_lp_identity(plaintext, offset);
  if (offset != plaintext.size()) {
    throw ProtocolError(ErrorCode::identity_mismatch, "trailing bytes after the identities");
  }
  return out;
}

Response parse_response(ByteView bytes) {
  if (bytes.empty()) malformed("empty response");
  if (bytes[0] != kVersion) {
    throw ProtocolError(ErrorCode::unsupported_version,
                        "response version " + std::to_string(bytes[0]));
  }
  if (bytes.size() < 2) malformed("response truncated");
  if (bytes[1] != static_cast<std::uint8_t>(MessageType::chair_response) &&
      bytes[1] != static_cast<std::uint8_t>(MessageType::responder_response)) {
    throw ProtocolError(ErrorCode::unknown_message_type,
                        "not a response type: " + std::to_string(bytes[1]));
  }
  if (bytes.size() < kResponseSize) malformed("response truncated");
  if (bytes.size() > kResponseSize) malformed("response over-long");
  if (read_u16(bytes, 28) != kWrappedKeySize) malformed("wrapped key length field");
  Response response;
  response.version = bytes[0];
  response.type = static_cast<MessageType>(bytes[1]);
  response.profile = bytes[2];
  response.suite = bytes[3];
  response.conference_id.assign(bytes.begin() + 4, bytes.begin() + 20);
  response.key_id.assign(bytes.begin() + 20, bytes.begin() + 28);
  response.wrapped.assign(bytes.begin() + 30, bytes.end());
  return response;
}

Bytes serialize_response(const Response& response) {
  if (response.conference_id.size() != kConferenceIdSize || response.key_id.size() != kKeyIdSize ||
      response.wrapped.size() != kWrappedKeySize) {
    throw ProtocolError(ErrorCode::internal_error, "response field sizes");
  }
  Bytes out;
  append_u8(out, response.version);
  append_u8(out, static_cast<std::uint8_t>(response.type));
  append_u8(out, response.profile);
  append_u8(out, response.suite);
  out.insert(out.end(), response.conference_id.begin(), response.conference_id.end());
  out.insert(out.end(), response.key_id.begin(), response.key_id.end());
  append_u16(out, static_cast<std::uint16_t>(response.wrapped.size()));
  out.insert(out.end(), response.wrapped.begin(), response.wrapped.end());
  return out;
}

}  // namespace kms::protocol
