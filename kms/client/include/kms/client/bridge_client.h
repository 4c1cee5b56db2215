// The conference bridge side: opens the keys the KMS released to it (docs/PROTOCOL.md
// "Bridge key release") with its bridge root key BK_Y.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  // bridge_root_key: BK_Y (32 bytes), of bridge key version key_version (>= 1, as
  // kms-provision's export file says). Throws ClientError(invalid_argument).
  BridgeClient(std::string bridge_id, ByteView bridge_root_key, Profile profile,
               std::uint32_t key_version = 1);

  const std::string& identity() const noexcept { return bridge_id_; }
  std::uint32_t key_version() const noexcept { return key_version_; }

  // The release's bridge_key_version against this client's key: throws
  // ClientError(key_version_mismatch), naming both versions, when the KMS wrapped the
  // items under another version of BK_Y (a rotation this bridge missed, or a stale KMS),
  // which would otherwise only show as unwrap_failed on every item.
  void check_key_version(std::uint32_t release_key_version) const;

  // Derives BW for the item and unwraps K_N. Throws ClientError(unwrap_failed) when the
  // item was not made for this bridge, conference, member, role, key_id and suite.
  MediaKey open(ByteView conference_id, const BridgeItem& item) const;

  // A whole release: check_key_version, then open() of every item, in order.
  std::vector<MediaKey> open_release(ByteView conference_id, std::uint32_t release_key_version,
                                     const std::vector<BridgeItem>& items) const;

 private:
  std::string bridge_id_;
  Profile profile_;
  Secret root_key_;
  std::uint32_t key_version_;
};

}  // namespace kms::client
