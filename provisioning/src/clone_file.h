// The clone file of the key cloning ceremony (docs/OPERATIONS.md "Cloning the KMS keys"):
// M, the storage and the transport key RFC 5649-wrapped under the cloning key, with the KCV
// of each key and of the cloning key, and the transport key's check blob. Text lines:
//   # <comment>
//   # format: 1
//   # profile: <token profile name>
//   # cloning_key_kcv: <6 hex>
//   # transport_check: <80 hex: RFC 5649(transport key, V)>
//   key <label> <kcv, 6 hex> <80 hex: RFC 5649(cloning key, key)>   (three lines)
// Without the cloning key's components the file reveals nothing but the KCVs.
#pragma once

#include <string>
#include <vector>

#include "hsm/secure_bytes.h"

namespace provisioning {

struct ClonedKey {
  std::string label;  // kms/master, kms/storage, kms/transport
  hsm::Bytes kcv;
  hsm::Bytes wrapped;  // under the cloning key
};

struct CloneFile {
  std::string profile;
  hsm::Bytes cloning_key_kcv;
  hsm::Bytes transport_check;
  std::vector<ClonedKey> keys;  // in the order M, storage, transport

  const ClonedKey& key(const std::string& label) const;
};

std::string format_clone_file(const CloneFile& file);
// Throws BadKeyMaterialError naming `path` and the line when the text is not a clone file.
CloneFile parse_clone_file(const std::string& text, const std::string& path);

}  // namespace provisioning
