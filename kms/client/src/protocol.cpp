#include "kms/client/protocol.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "kms/client/client_error.h"

namespace kms::client {

std::optional<SuiteLengths> suite_lengths(std::uint8_t suite) {
  switch (suite) {
    case static_cast<std::uint8_t>(Suite::aes_cm_128_hmac_sha1_80):
      return SuiteLengths{16, 14};
    case static_cast<std::uint8_t>(Suite::aead_aes_128_gcm):
      return SuiteLengths{16, 12};
    default:
      return std::nullopt;
  }
}

std::optional<Profile> profile_from_id(std::uint8_t id) {
  if (id == 1) return Profile::aes_ecb_sha256;
  if (id == 2) return Profile::sp800_108_cmac;
  return std::nullopt;
}

Bytes label(std::string_view name) {
  static constexpr std::string_view kPrefix = "IMS-CONF-KMS/1 ";
  const std::string text = std::string(kPrefix) + std::string(name);
  return Bytes(text.begin(), text.end());
}

void append_u8(Bytes& out, std::uint8_t value) { out.push_back(value); }
void append_u16(Bytes& out, std::uint16_t value) {
  out.push_back(static_cast<std::uint8_t>(value >> 8));
  out.push_back(static_cast<std::uint8_t>(value));
}
void append_u32(Bytes& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(value >> shift));
}
void append_u64(Bytes& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(value >> shift));
}

void append_lp(Bytes& out, ByteView value) {
  if (value.size() > 0xFFFF)
    throw ClientError(ClientErrorCode::invalid_argument, "field over 65535 bytes");
  append_u16(out, static_cast<std::uint16_t>(value.size()));
  out.insert(out.end(), value.begin(), value.end());
}

void append_lp(Bytes& out, std::string_view value) {
  append_lp(out, ByteView(reinterpret_cast<const std::uint8_t*>(value.data()), value.size()));
}

bool valid_identity(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdentitySize) return false;
  std::size_t scheme = 0;
  if (id.starts_with("sip:")) {
    scheme = 4;
  } else if (id.starts_with("sips:")) {
    scheme = 5;
  } else if (id.starts_with("tel:")) {
    scheme = 4;
  } else {
    return false;
  }
  if (id.size() == scheme) return false;
  for (char c : id) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x21 || byte > 0x7E) return false;
  }
  return true;
}

namespace {
Bytes sha256_prefix(const Bytes& input, std::size_t prefix) {
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(input.data(), input.size(), digest);
  return Bytes(digest, digest + prefix);
}
}  // namespace

Bytes conference_id(std::string_view chair_id, ByteView chair_nonce) {
  Bytes buffer = label("conference-id");
  buffer.push_back(0x00);
  append_lp(buffer, chair_id);
  append_lp(buffer, chair_nonce);
  Bytes out = sha256_prefix(buffer, kConferenceIdSize);
  OPENSSL_cleanse(buffer.data(), buffer.size());
  return out;
}

Bytes key_id(ByteView conference_id, std::string_view member_id, ByteView nonce) {
  Bytes buffer = label("key-id");
  buffer.push_back(0x00);
  append_lp(buffer, conference_id);
  append_lp(buffer, member_id);
  append_lp(buffer, nonce);
  Bytes out = sha256_prefix(buffer, kKeyIdSize);
  OPENSSL_cleanse(buffer.data(), buffer.size());
  return out;
}

Bytes subscriber_child_context(std::string_view subscriber_id) {
  Bytes out;
  append_lp(out, subscriber_id);
  return out;
}

Secret response_wrap_context(MessageType type, ByteView conference_id, std::string_view chair_id,
                             std::string_view responder_id, ByteView nonce, std::uint8_t suite) {
  Bytes out;
  append_u8(out, static_cast<std::uint8_t>(type));
  append_lp(out, conference_id);
  append_lp(out, chair_id);
  append_lp(out, responder_id);
  append_lp(out, nonce);
  append_u8(out, suite);
  Secret secret(out);
  OPENSSL_cleanse(out.data(), out.size());
  return secret;
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

}  // namespace kms::client
