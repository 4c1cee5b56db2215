// The conference bridge side: opens the keys the KMS released to it (docs/PROTOCOL.md
// "Bridge key release") with its bridge root key BK_Y.
#pragma once

#include <cstdint>
#include <string>

#include "kms/client/media_key.h"
#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::client {

// One released item, as the KMS sends it.
struct BridgeItem {
  std::string member_id;
  std::uint8_t role = 0;  // 1 chair, 2 member
  Bytes key_id;           // 8 bytes
  std::uint8_t suite = 0;
  Bytes wrapped;  // RFC 5649 of K_N under BW
};

class BridgeClient {
 public:
  // bridge_root_key: BK_Y (32 bytes). Throws ClientError(invalid_argument).
  BridgeClient(std::string bridge_id, ByteView bridge_root_key, Profile profile);

  const std::string& identity() const noexcept { return bridge_id_; }

  // Derives BW for the item and unwraps K_N. Throws ClientError(unwrap_failed) when the
  // item was not made for this bridge, conference, member, role, key_id and suite.
  MediaKey open(ByteView conference_id, const BridgeItem& item) const;

 private:
  std::string bridge_id_;
  Profile profile_;
  Secret root_key_;
};

}  // namespace kms::client
