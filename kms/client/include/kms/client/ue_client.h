// The UE side of the protocol: a subscriber holding its root key K_X builds envelopes and
// opens the KMS's responses (docs/PROTOCOL.md). Pure software; the root key is only used to
// derive the two children and is not kept.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kms/client/media_key.h"
#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::client {

struct EnvelopeOptions {
  std::optional<std::uint64_t> timestamp;  // default: now
  std::optional<Bytes> iv;                 // default: 12 random bytes
};

class UeClient {
 public:
  // root_key: K_X (32 bytes). Throws ClientError(invalid_argument) on a bad identity/key.
  UeClient(std::string identity, ByteView root_key, std::uint32_t key_version, Profile profile);

  const std::string& identity() const noexcept { return identity_; }
  std::uint32_t key_version() const noexcept { return key_version_; }
  Profile profile() const noexcept { return profile_; }

  // A fresh 32-byte nonce (R_A once per conference for the chair, R_B per request).
  static Secret make_nonce();

  // Chair (UE-A): E_A(R_A, ID-A, ID-B), type 0x01, sent to UE-B in the INVITE.
  Bytes chair_envelope(ByteView chair_nonce, std::string_view responder_id, Suite suite,
                       const EnvelopeOptions& options = {}) const;
  // Responder (UE-B): E_B(R_B, ID-A, ID-B), type 0x02, sent with E_A to the KMS.
  Bytes responder_envelope(ByteView responder_nonce, std::string_view chair_id, Suite suite,
                           const EnvelopeOptions& options = {}) const;

  // Chair: opens E_A(R_A, K1) relayed by the responder. Checks type, profile, suite, conf_id
  // (computed from ID-A, R_A) and key_id; unwraps K1. Throws ClientError.
  MediaKey open_chair_response(ByteView response, ByteView chair_nonce,
                               std::string_view responder_id, Suite suite) const;
  // Responder: opens E_B(R_B, K2). expected_conference_id: the conf_id the KMS returned
  // beside the responses (the responder does not know R_A).
  MediaKey open_responder_response(ByteView response, ByteView responder_nonce,
                                   std::string_view chair_id, Suite suite,
                                   ByteView expected_conference_id) const;

  // The envelope key KE_X and response key KR_X (tests compare them with the vectors).
  const Secret& envelope_key() const noexcept { return envelope_key_; }
  const Secret& response_key() const noexcept { return response_key_; }

 private:
  Bytes make_envelope(MessageType type, ByteView nonce, std::string_view chair_id,
                      std::string_view responder_id, Suite suite,
                      const EnvelopeOptions& options) const;
  MediaKey open_response(ByteView response, MessageType type, ByteView nonce,
                         std::string_view chair_id, std::string_view responder_id, Suite suite,
                         ByteView expected_conference_id) const;

  std::string identity_;
  std::uint32_t key_version_;
  Profile profile_;
  Secret envelope_key_;
  Secret response_key_;
};

}  // namespace kms::client
