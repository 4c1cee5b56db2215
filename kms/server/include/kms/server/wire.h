// The JSON wire format of kmsd's HTTP API (docs/SERVER.md): binary fields are base64url
// without padding. Shared by the server and kms-client. Parsing is strict: an object with
// exactly the documented fields, of the documented types; anything else is a
// ProtocolError(malformed_request) naming the field; so is a key that occurs twice in one
// object (at any depth). Identity fields only need to be JSON strings: the identity rules
// are the services' (invalid_identity).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "kms/services.h"

namespace kms::wire {

// POST /v1/key-request
std::string key_request_to_json(const KeyRequest& request);
KeyRequest key_request_from_json(std::string_view body);
std::string key_response_to_json(const KeyResponse& response);
KeyResponse key_response_from_json(std::string_view body);

// POST /v1/bridge/keys: {"conference_id": b64u[, "bridge_key_version": n]}
struct BridgeKeyRequest {
  Bytes conference_id;                              // 16 bytes
  std::optional<std::uint32_t> bridge_key_version;  // the bridge key version the bridge holds
};
std::string bridge_request_to_json(const Bytes& conference_id,
                                   std::optional<std::uint32_t> bridge_key_version = std::nullopt);
BridgeKeyRequest bridge_request_from_json(std::string_view body);
std::string bridge_release_to_json(const BridgeRelease& release);
BridgeRelease bridge_release_from_json(std::string_view body);

// Error body {"error": code, "detail": text}.
std::string error_to_json(std::string_view code, std::string_view detail);
struct ErrorBody {
  std::string error;
  std::string detail;
};
std::optional<ErrorBody> error_from_json(std::string_view body);

// Binary field limits (bytes, decoded) enforced by the parsers.
inline constexpr std::size_t kMaxEnvelopeBytes = 1024;
inline constexpr std::size_t kMaxIdentityBytes = 256;
inline constexpr std::size_t kConferenceIdBytes = 16;

}  // namespace kms::wire
