// docs/PROTOCOL.md constants and the software-computed parts of the protocol (identifiers,
// KDF contexts) on the server side. Key material never passes through here: only IDs,
// nonces and public identifiers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "hsm/secure_bytes.h"
#include "kms/services.h"

namespace kms::protocol {

using hsm::ByteView;

inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kNonceSize = 32;
inline constexpr std::size_t kKeySize = 32;
inline constexpr std::size_t kIvSize = 12;
inline constexpr std::size_t kTagSize = 16;
inline constexpr std::size_t kEnvelopeHeaderSize = 28;
inline constexpr std::size_t kMinIdentitySize = 5;  // "tel:1"
inline constexpr std::size_t kMaxIdentitySize = 256;
// header + R + lp(ID-A) + lp(ID-B) + tag
inline constexpr std::size_t kMinEnvelopeSize =
    kEnvelopeHeaderSize + kNonceSize + 2 * (2 + kMinIdentitySize) + kTagSize;
inline constexpr std::size_t kMaxEnvelopeSize =
    kEnvelopeHeaderSize + kNonceSize + 2 * (2 + kMaxIdentitySize) + kTagSize;  // 592
inline constexpr std::size_t kConferenceIdSize = 16;
inline constexpr std::size_t kKeyIdSize = 8;
inline constexpr std::size_t kWrappedKeySize = 40;
inline constexpr std::size_t kResponseHeaderSize = 30;
inline constexpr std::size_t kResponseSize = kResponseHeaderSize + kWrappedKeySize;  // 70

enum class MessageType : std::uint8_t {
  chair_invite = 0x01,
  responder_request = 0x02,
  chair_response = 0x11,
  responder_response = 0x12,
};
bool known_message_type(std::uint8_t type);

enum class Role : std::uint8_t { chair = 1, member = 2 };

inline constexpr std::uint8_t kSuiteAesCm128HmacSha1_80 = 1;
inline constexpr std::uint8_t kSuiteAeadAes128Gcm = 2;
bool supported_suite(std::uint8_t suite);

// L(name) = "IMS-CONF-KMS/1 " + name.
Bytes label(std::string_view name);
void append_u8(Bytes& out, std::uint8_t value);
void append_u16(Bytes& out, std::uint16_t value);
void append_u32(Bytes& out, std::uint32_t value);
void append_u64(Bytes& out, std::uint64_t value);
void append_lp(Bytes& out, ByteView value);  // u16(len) || value
void append_lp(Bytes& out, std::string_view value);

// conf_id = SHA-256(L("conference-id") || 0x00 || lp(ID-A) || lp(R_A))[0..16)
Bytes conference_id(std::string_view chair_id, ByteView chair_nonce);
// key_id = SHA-256(L("key-id") || 0x00 || lp(conf_id) || lp(member) || lp(R))[0..8)
Bytes key_id(ByteView conference_id, std::string_view member_id, ByteView nonce);

// KDF contexts. Those that hold a nonce are wiped on destruction.
Bytes subscriber_child_context(std::string_view subscriber_id);  // lp(ID-X)
hsm::SecureBytes chair_media_context(std::string_view chair_id, ByteView chair_nonce,
                                     std::uint8_t suite);
hsm::SecureBytes member_media_context(ByteView conference_id, std::string_view member_id,
                                      ByteView nonce, std::uint8_t suite);
hsm::SecureBytes response_wrap_context(MessageType type, ByteView conference_id,
                                       std::string_view chair_id, std::string_view responder_id,
                                       ByteView nonce, std::uint8_t suite);
Bytes bridge_wrap_context(std::string_view bridge_id, ByteView conference_id,
                          std::string_view member_id, Role role, ByteView key_id,
                          std::uint8_t suite);

// The request digest that tells a retransmission from a replay:
// SHA-256(lp(ID-A) || lp(ID-B) || lp(E_A) || lp(E_B)); and an envelope's digest SHA-256(E).
Bytes request_digest(const KeyRequest& request);
Bytes envelope_digest(ByteView envelope);

}  // namespace kms::protocol
