#include "kms/client/bridge_client.h"

#include "kms/client/client_error.h"
#include "kms/client/crypto.h"

namespace kms::client {

BridgeClient::BridgeClient(std::string bridge_id, ByteView bridge_root_key, Profile profile,
                           std::uint32_t key_version)
    : bridge_id_(std::move(bridge_id)),
      profile_(profile),
      root_key_(bridge_root_key),
      key_version_(key_version) {
  if (key_version_ == 0) {
    throw ClientError(ClientErrorCode::invalid_argument, "bridge key versions start at 1");
  }
  if (bridge_id_.empty() || bridge_id_.size() > kMaxIdentitySize) {
    throw ClientError(ClientErrorCode::invalid_argument, "bridge identity length");
  }
  if (root_key_.size() != kKeySize) {
    throw ClientError(ClientErrorCode::invalid_argument, "bridge key must be 32 bytes");
  }
}

void BridgeClient::check_key_version(std::uint32_t release_key_version) const {
  if (release_key_version != key_version_) {
    throw ClientError(ClientErrorCode::key_version_mismatch,
                      "the KMS wrapped these keys under bridge key version " +
                          std::to_string(release_key_version) + ", this bridge holds version " +
                          std::to_string(key_version_) +
                          (release_key_version > key_version_
                               ? ": the bridge key was rotated, install the new key"
                               : ": the bridge's key is newer than the KMS's"));
  }
}

std::vector<MediaKey> BridgeClient::open_release(ByteView conference_id,
                                                 std::uint32_t release_key_version,
                                                 const std::vector<BridgeItem>& items) const {
  check_key_version(release_key_version);
  std::vector<MediaKey> keys;
  keys.reserve(items.size());
  for (const BridgeItem& item : items) keys.push_back(open(conference_id, item));
  return keys;
}

MediaKey BridgeClient::open(ByteView conference_id, const BridgeItem& item) const {
  if (conference_id.size() != kConferenceIdSize || item.key_id.size() != kKeyIdSize) {
    throw ClientError(ClientErrorCode::malformed_message, "conf_id or key_id length");
  }
  if (item.role != static_cast<std::uint8_t>(Role::chair) &&
      item.role != static_cast<std::uint8_t>(Role::member)) {
    throw ClientError(ClientErrorCode::malformed_message, "role");
  }
  if (!suite_lengths(item.suite)) throw ClientError(ClientErrorCode::malformed_message, "suite");
  if (item.wrapped.size() != kWrappedKeySize) {
    throw ClientError(ClientErrorCode::malformed_message, "wrapped key length");
  }
  const Bytes context = bridge_wrap_context(bridge_id_, conference_id, item.member_id,
                                            static_cast<Role>(item.role), item.key_id, item.suite);
  const Secret wrap_key = kdf(profile_, root_key_, label("bridge-wrap"), context);
  Secret key = aes_key_unwrap_pad(wrap_key, item.wrapped);
  if (key.size() != kKeySize) throw ClientError(ClientErrorCode::malformed_message, "key length");
  return make_media_key(Bytes(conference_id.begin(), conference_id.end()), item.key_id, item.suite,
                        std::move(key));
}

}  // namespace kms::client
