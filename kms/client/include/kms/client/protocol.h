// docs/PROTOCOL.md as seen from a UE or a bridge: constants, labels, KDF contexts,
// the conference identifier and key ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kms/client/secret.h"

namespace kms::client {

inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::size_t kNonceSize = 32;
inline constexpr std::size_t kKeySize = 32;  // every key and KDF output
inline constexpr std::size_t kIvSize = 12;
inline constexpr std::size_t kTagSize = 16;
inline constexpr std::size_t kEnvelopeHeaderSize = 28;
inline constexpr std::size_t kConferenceIdSize = 16;
inline constexpr std::size_t kKeyIdSize = 8;
inline constexpr std::size_t kWrappedKeySize = 40;  // RFC 5649 of a 32-byte key
inline constexpr std::size_t kResponseSize = 30 + kWrappedKeySize;
inline constexpr std::size_t kMaxIdentitySize = 256;

enum class Profile : std::uint8_t { aes_ecb_sha256 = 1, sp800_108_cmac = 2 };
enum class Suite : std::uint8_t { aes_cm_128_hmac_sha1_80 = 1, aead_aes_128_gcm = 2 };

enum class MessageType : std::uint8_t {
  chair_invite = 0x01,        // E_A(R_A, ID-A, ID-B)
  responder_request = 0x02,   // E_B(R_B, ID-A, ID-B)
  chair_response = 0x11,      // E_A(R_A, K1)
  responder_response = 0x12,  // E_B(R_B, K2)
};

enum class Role : std::uint8_t { chair = 1, member = 2 };

// SRTP master key and salt lengths of a suite; nullopt for an unknown suite id.
struct SuiteLengths {
  std::size_t master_key;
  std::size_t master_salt;
};
std::optional<SuiteLengths> suite_lengths(std::uint8_t suite);
std::optional<Profile> profile_from_id(std::uint8_t id);

// L(name) = "IMS-CONF-KMS/1 " + name.
Bytes label(std::string_view name);
// lp(x) = u16(len(x)) || x, appended to out.
void append_lp(Bytes& out, ByteView value);
void append_lp(Bytes& out, std::string_view value);
void append_u8(Bytes& out, std::uint8_t value);
void append_u16(Bytes& out, std::uint16_t value);
void append_u32(Bytes& out, std::uint32_t value);
void append_u64(Bytes& out, std::uint64_t value);

// A valid IMS public identity: "sip:", "sips:" or "tel:" followed by 1.. printable ASCII
// bytes (0x21..0x7E), 1..256 bytes in all.
bool valid_identity(std::string_view id);

// conf_id = SHA-256(L("conference-id") || 0x00 || lp(ID-A) || lp(R_A))[0..16)
Bytes conference_id(std::string_view chair_id, ByteView chair_nonce);
// key_id = SHA-256(L("key-id") || 0x00 || lp(conf_id) || lp(member) || lp(R))[0..8)
Bytes key_id(ByteView conference_id, std::string_view member_id, ByteView nonce);

// KDF contexts (docs/PROTOCOL.md "Key hierarchy", "Response", "Bridge key release").
Bytes subscriber_child_context(std::string_view subscriber_id);
Secret response_wrap_context(MessageType type, ByteView conference_id, std::string_view chair_id,
                             std::string_view responder_id, ByteView nonce, std::uint8_t suite);
Bytes bridge_wrap_context(std::string_view bridge_id, ByteView conference_id,
                          std::string_view member_id, Role role, ByteView key_id,
                          std::uint8_t suite);

}  // namespace kms::client
