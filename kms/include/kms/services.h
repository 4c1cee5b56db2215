// The domain services the HTTPS server calls. Transport-free: binary in, binary out.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kms/errors.h"

namespace kms {

using Bytes = std::vector<std::uint8_t>;

// Who asked, for the audit log (the server fills it in).
struct RequestContext {
  std::string peer;        // "127.0.0.1:53012"
  std::string request_id;  // unique per HTTP request
};

// Steps 4-6 / 11-13 of the seed: UE-B sends ID-A, ID-B, E_A(...), E_B(...).
struct KeyRequest {
  std::string chair_id;      // plain ID-A
  std::string responder_id;  // plain ID-B
  Bytes chair_envelope;      // E_A(R_A, ID-A, ID-B)
  Bytes responder_envelope;  // E_B(R_B, ID-A, ID-B)
};

struct KeyResponse {
  Bytes conference_id;       // 16 bytes
  Bytes chair_response;      // E_A(R_A, K1), relayed by UE-B to UE-A
  Bytes responder_response;  // E_B(R_B, K2)
};

class KeyRequestService {
 public:
  virtual ~KeyRequestService() = default;
  // Throws ProtocolError; nothing is admitted when it throws.
  virtual KeyResponse handle(const KeyRequest& request, const RequestContext& context) = 0;
};

// Figure 20: the bridge (identity from its client certificate) fetches a conference's keys.
struct ReleasedKey {
  std::string member_id;
  std::uint8_t role = 0;  // 1 chair, 2 member
  Bytes key_id;           // 8 bytes
  std::uint8_t suite = 0;
  Bytes wrapped;  // RFC 5649 under the bridge's per-key wrap key
};

struct BridgeRelease {
  Bytes conference_id;
  std::uint8_t profile = 0;
  std::vector<ReleasedKey> keys;
  std::int64_t expires_at = 0;  // Unix seconds
  // The version of the bridge root key BK_Y every item is wrapped under: a bridge that
  // holds another version cannot unwrap them (docs/PROTOCOL.md "Bridge key release").
  std::uint32_t bridge_key_version = 0;
};

class BridgeService {
 public:
  virtual ~BridgeService() = default;
  // Throws ProtocolError; every release and refusal is audited. expected_key_version: the
  // bridge key version the bridge holds, when it says; another current version is refused
  // with key_version_mismatch (nothing released, no binding).
  virtual BridgeRelease release(const std::string& bridge_id, const Bytes& conference_id,
                                const RequestContext& context,
                                std::optional<std::uint32_t> expected_key_version) = 0;
  BridgeRelease release(const std::string& bridge_id, const Bytes& conference_id,
                        const RequestContext& context) {
    return release(bridge_id, conference_id, context, std::nullopt);
  }
};

}  // namespace kms
