#include "kms/core/protocol.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "tokens/kdf.h"

namespace kms::protocol {

bool known_message_type(std::uint8_t type) {
  return type == 0x01 || type == 0x02 || type == 0x11 || type == 0x12;
}

bool supported_suite(std::uint8_t suite) {
  return suite == kSuiteAesCm128HmacSha1_80 || suite == kSuiteAeadAes128Gcm;
}

Bytes label(std::string_view name) { return tokens::protocol_label(name); }

void append_u8(Bytes& out, std::uint8_t value) { out.push_back(value); }
void append_u16(Bytes& out, std::uint16_t value) {
  out.push_back(static_cast<std::uint8_t>(value >> 8));
  out.push_back(static_cast<std::uint8_t>(value));
}
void append_u32(Bytes& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}
void append_u64(Bytes& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}
void append_lp(Bytes& out, ByteView value) {
  if (value.size() > 0xFFFF) {
    throw ProtocolError(ErrorCode::malformed_request, "length-prefixed field over 65535 bytes");
  }
  append_u16(out, static_cast<std::uint16_t>(value.size()));
  out.insert(out.end(), value.begin(), value.end());
}
void append_lp(Bytes& out, std::string_view value) {
  append_lp(out, ByteView(reinterpret_cast<const std::uint8_t*>(value.data()), value.size()));
}

namespace {

Bytes sha256(ByteView input, std::size_t prefix = SHA256_DIGEST_LENGTH) {
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(input.data(), input.size(), digest);
  return Bytes(digest, digest + prefix);
}

// A buffer that held a nonce: wipe before it is freed.
hsm::SecureBytes into_secure(Bytes& buffer) {
  hsm::SecureBytes out(buffer);
  OPENSSL_cleanse(buffer.data(), buffer.size());
  return out;
}

}  // namespace

Bytes conference_id(std::string_view chair_id, ByteView chair_nonce) {
  Bytes input = label("conference-id");
  input.push_back(0x00);
  append_lp(input, chair_id);
  append_lp(input, chair_nonce);
  Bytes out = sha256(input, kConferenceIdSize);
  OPENSSL_cleanse(input.data(), input.size());
  return out;
}

Bytes key_id(ByteView conference_id, std::string_view member_id, ByteView nonce) {
  Bytes input = label("key-id");
  input.push_back(0x00);
  append_lp(input, conference_id);
  append_lp(input, member_id);
  append_lp(input, nonce);
  Bytes out = sha256(input, kKeyIdSize);
  OPENSSL_cleanse(input.data(), input.size());
  return out;
}

Bytes subscriber_child_context(std::string_view subscriber_id) {
  Bytes out;
  append_lp(out, subscriber_id);
  return out;
}

hsm::SecureBytes chair_media_context(std::string_view chair_id, ByteView chair_nonce,
                                     std::uint8_t suite) {
  Bytes out;
  append_lp(out, chair_id);
  append_lp(out, chair_nonce);
  append_u8(out, suite);
  return into_secure(out);
}

hsm::SecureBytes member_media_context(ByteView conference_id, std::string_view member_id,
                                      ByteView nonce, std::uint8_t suite) {
  Bytes out;
  append_lp(out, conference_id);
  append_lp(out, member_id);
  append_lp(out, nonce);
  append_u8(out, suite);
  return into_secure(out);
}

hsm::SecureBytes response_wrap_context(MessageType type, ByteView conference_id,
                                       std::string_view chair_id, std::string_view responder_id,
                                       ByteView nonce, std::uint8_t suite) {
  Bytes out;
  append_u8(out, static_cast<std::uint8_t>(type));
  append_lp(out, conference_id);
  append_lp(out, chair_id);
  append_lp(out, responder_id);
  append_lp(out, nonce);
  append_u8(out, suite);
  return into_secure(out);
}

Bytes bridge_wrap_context(std::string_view bridge_id, ByteView conference_id,
                          std::string_view member_id, Role role, ByteView key_id,
                          std::uint8_t suite) {
  Bytes out;
  append_lp(out, bridge_id);
  append_lp(out, conference_id);
  append_lp(out, member_id);
  append_u8(out, static_cast<std::uint8_t>(role));
  out.insert(out.end(), key_id.begin(), key_id.end());
  append_u8(out, suite);
  return out;
}

Bytes request_digest(const KeyRequest& request) {
  Bytes input;
  append_lp(input, request.chair_id);
  append_lp(input, request.responder_id);
  append_lp(input, request.chair_envelope);
  append_lp(input, request.responder_envelope);
  return sha256(input);
}

Bytes envelope_digest(ByteView envelope) { return sha256(envelope); }

}  // namespace kms::protocol
