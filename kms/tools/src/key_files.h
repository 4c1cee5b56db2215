// Files kms-client reads and writes on the UE and bridge side. Secrets (root keys, nonces,
// media keys) are written 0600 and wiped from memory after use.
//   root key file   kms-provision's export (docs/OPERATIONS.md "Root key export files"):
//                   '#' lines, then the key in hex, either plaintext
//                   (--insecure-plaintext-export) or RFC 5649-wrapped under a
//                   personalisation key (then give the personalisation key file, hex).
//                   Format 2 has header fields "# name: value" (format, identity, kind,
//                   key_version, profile, wrapping); format 1 (no "# format: 2") has none.
//   chair state     {"chair_id", "nonce": hex R_A}: one R_A per conference, all invitees.
//   media key       {"identity","conference_id","key_id","suite","master_key","master_salt"}
//   bridge keys     {"bridge_id","conference_id","keys":[{"member_id","role","key_id","suite",
//                    "master_key","master_salt"}]}
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "kms/client/media_key.h"
#include "kms/client/protocol.h"
#include "kms/client/secret.h"

namespace kms::tools {

struct RootKeyFile {
  client::Secret key;  // 32 bytes, unwrapped
  // From the format 2 header; nullopt in a format 1 file (the caller's --key-version and
  // --profile then decide, default 1 and aes-ecb-sha256).
  std::optional<std::uint32_t> key_version;
  std::optional<client::Profile> profile;
  std::optional<std::string> identity;
  std::optional<std::string> kind;  // "subscriber" / "bridge"
};
// Throws std::runtime_error naming the file and the problem.
RootKeyFile read_root_key_file(const std::string& path,
                               const std::optional<std::string>& personalisation_key_file);
client::Secret read_root_key(const std::string& path,
                             const std::optional<std::string>& personalisation_key_file);

std::string read_text(const std::string& path);
void write_text(const std::string& path, const std::string& text, bool secret);

struct ChairState {
  std::string chair_id;
  client::Secret nonce;
};
// Reads the state file, or creates it with a fresh R_A when it does not exist.
ChairState load_or_create_chair_state(const std::string& path, const std::string& chair_id);
ChairState read_chair_state(const std::string& path);

std::string media_key_json(const std::string& identity, const client::MediaKey& key);
void write_media_key(const std::string& path, const std::string& identity,
                     const client::MediaKey& key);

struct MediaKeyFile {
  std::string identity;
  client::Bytes conference_id;
  client::Bytes key_id;
  std::uint8_t suite = 0;
  client::Secret master_key;
  client::Secret master_salt;
};
MediaKeyFile read_media_key(const std::string& path);
std::vector<MediaKeyFile> read_bridge_keys(const std::string& path);  // identity = member_id

}  // namespace kms::tools
