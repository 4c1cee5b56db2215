#include "key_files.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "kms/client/base64url.h"
#include "kms/client/ue_client.h"
#include "kms/hex.h"

namespace kms::tools {
namespace {

namespace json = boost::json;

// The parts of an export file before (and including) its key line.
struct ExportText {
  std::string key_line;                       // hex; empty if the file has none
  std::map<std::string, std::string> fields;  // format 2 header fields
  bool legacy_wrapped_comment = false;        // format 1: a comment mentions "wrapped"
};

const std::set<std::string>& header_field_names() {
  static const std::set<std::string> names = {"format",      "identity", "kind",
                                              "key_version", "profile",  "wrapping"};
  return names;
}

ExportText split_export(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  std::string line;
  ExportText out;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    if (line.front() != '#') {
      out.key_line = std::move(line);
      return out;
    }
    if (line.find("wrapped") != std::string::npos) out.legacy_wrapped_comment = true;
    // "# name: value" with a known name is a header field, anything else a comment.
    const std::size_t colon = line.find(": ");
    if (line.size() > 2 && line[1] == ' ' && colon != std::string::npos) {
      const std::string name = line.substr(2, colon - 2);
      if (header_field_names().contains(name)) {
        if (!out.fields.emplace(name, line.substr(colon + 2)).second) {
          throw std::runtime_error(path + ": header field " + name + " given twice");
        }
      }
    }
  }
  return out;
}

std::uint32_t parse_key_version(const std::string& text, const std::string& path) {
  const bool digits = !text.empty() && text.size() <= 10 &&
                      text.find_first_not_of("0123456789") == std::string::npos;
  const std::uint64_t value = digits ? std::stoull(text) : 0;
  if (value < 1 || value > 0xFFFFFFFFu) {
    throw std::runtime_error(path + ": key_version \"" + text + "\" is not 1 .. 4294967295");
  }
  return static_cast<std::uint32_t>(value);
}

// Wipes a string that held key material when it goes out of scope.
struct WipeOnExit {
  std::string& text;
  ~WipeOnExit() { OPENSSL_cleanse(text.data(), text.size()); }
};

client::Secret unwrap_rfc5649(client::ByteView kek, client::ByteView wrapped) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  client::Secret out(wrapped.size());
  int length = 0;
  int final_length = 0;
  const bool ok =
      kek.size() == 32 &&
      EVP_DecryptInit_ex(ctx, EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr) == 1 &&
      EVP_DecryptUpdate(ctx, out.data(), &length, wrapped.data(),
                        static_cast<int>(wrapped.size())) == 1 &&
      EVP_DecryptFinal_ex(ctx, out.data() + length, &final_length) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) throw std::runtime_error("cannot unwrap the root key with the personalisation key");
  return client::Secret(
      client::ByteView(out.data(), static_cast<std::size_t>(length + final_length)));
}

const json::object& object_of(const json::value& value, const std::string& what) {
  if (!value.is_object()) throw std::runtime_error(what + ": not a JSON object");
  return value.as_object();
}

std::string text_field(const json::object& object, const char* name, const std::string& what) {
  const json::value* value = object.if_contains(name);
  if (!value || !value->is_string()) throw std::runtime_error(what + ": missing " + name);
  return std::string(value->as_string());
}

client::Bytes b64_field(const json::object& object, const char* name, const std::string& what) {
  auto bytes = client::base64url_decode(text_field(object, name, what));
  if (!bytes) throw std::runtime_error(what + ": " + name + " is not base64url");
  return *bytes;
}

client::Secret hex_secret(const json::object& object, const char* name, const std::string& what) {
  std::string text = text_field(object, name, what);
  auto bytes = from_hex(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!bytes) throw std::runtime_error(what + ": " + name + " is not hex");
  client::Secret secret(*bytes);
  OPENSSL_cleanse(bytes->data(), bytes->size());
  return secret;
}

MediaKeyFile media_key_from(const json::object& object, const std::string& what,
                            const char* identity_field) {
  MediaKeyFile key;
  key.identity = text_field(object, identity_field, what);
  key.key_id = b64_field(object, "key_id", what);
  const json::value* suite = object.if_contains("suite");
  if (!suite || !suite->is_int64()) throw std::runtime_error(what + ": missing suite");
  key.suite = static_cast<std::uint8_t>(suite->as_int64());
  key.master_key = hex_secret(object, "master_key", what);
  key.master_salt = hex_secret(object, "master_salt", what);
  return key;
}

json::value parse_file(const std::string& path) {
  std::string text = read_text(path);
  json::error_code ec;
  json::value value = json::parse(text, ec);
  OPENSSL_cleanse(text.data(), text.size());
  if (ec) throw std::runtime_error(path + ": not JSON: " + ec.message());
  return value;
}

}  // namespace

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_text(const std::string& path, const std::string& text, bool secret) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  const std::string temporary = path + ".tmp";
  const int fd =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok || std::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot write " + path);
  }
}

RootKeyFile read_root_key_file(const std::string& path,
                               const std::optional<std::string>& personalisation_key_file) {
  std::string text = read_text(path);
  ExportText parts = split_export(text, path);
  OPENSSL_cleanse(text.data(), text.size());
  const WipeOnExit wipe_key_line{parts.key_line};
  RootKeyFile file;
  bool wrapped = parts.legacy_wrapped_comment;
  const auto field = [&](const char* name) -> const std::string& {
    const auto found = parts.fields.find(name);
    if (found == parts.fields.end()) {
      throw std::runtime_error(path + ": format 2 export without header field " + name);
    }
    return found->second;
  };
  if (const auto format = parts.fields.find("format"); format != parts.fields.end()) {
    if (format->second != "2") {
      throw std::runtime_error(path + ": export format " + format->second +
                               " is not known (this kms-client reads formats 1 and 2)");
    }
    file.key_version = parse_key_version(field("key_version"), path);
    const std::string& profile = field("profile");
    if (profile == "aes-ecb-sha256") {
      file.profile = client::Profile::aes_ecb_sha256;
    } else if (profile == "sp800-108-cmac") {
      file.profile = client::Profile::sp800_108_cmac;
    } else {
      throw std::runtime_error(path + ": profile \"" + profile + "\" is not known");
    }
    file.identity = field("identity");
    file.kind = field("kind");
    const std::string& wrapping = field("wrapping");
    if (wrapping == "none") {
      wrapped = false;
    } else if (wrapping.starts_with("personalisation-key ")) {
      wrapped = true;
    } else {
      throw std::runtime_error(path + ": wrapping \"" + wrapping + "\" is not known");
    }
  }
  auto bytes = from_hex(parts.key_line);
  if (!bytes) throw std::runtime_error(path + ": no hex key line");
  client::Secret data(*bytes);
  OPENSSL_cleanse(bytes->data(), bytes->size());
  if (!wrapped) {
    if (data.size() != 32) throw std::runtime_error(path + ": root key is not 32 bytes");
    file.key = std::move(data);
    return file;
  }
  if (!personalisation_key_file) {
    throw std::runtime_error(path +
                             " is wrapped under a personalisation key: give "
                             "--personalisation-key-file");
  }
  client::Secret kek = read_root_key(*personalisation_key_file, std::nullopt);
  client::Secret key = unwrap_rfc5649(kek, data);
  if (key.size() != 32) throw std::runtime_error(path + ": unwrapped root key is not 32 bytes");
  file.key = std::move(key);
  return file;
}

client::Secret read_root_key(const std::string& path,
                             const std::optional<std::string>& personalisation_key_file) {
  return read_root_key_file(path, personalisation_key_file).key;
}

ChairState read_chair_state(const std::string& path) {
  const json::value value = parse_file(path);
  const auto& object = object_of(value, path);
  ChairState state;
  state.chair_id = text_field(object, "chair_id", path);
  state.nonce = hex_secret(object, "nonce", path);
  if (state.nonce.size() != 32) throw std::runtime_error(path + ": nonce is not 32 bytes");
  return state;
}

ChairState load_or_create_chair_state(const std::string& path, const std::string& chair_id) {
  if (::access(path.c_str(), F_OK) == 0) {
    ChairState state = read_chair_state(path);
    if (state.chair_id != chair_id) {
      throw std::runtime_error(path + " belongs to chair " + state.chair_id);
    }
    return state;
  }
  ChairState state{chair_id, client::UeClient::make_nonce()};
  json::object object;
  object["chair_id"] = chair_id;
  std::string nonce_hex = to_hex(state.nonce);
  object["nonce"] = nonce_hex;
  OPENSSL_cleanse(nonce_hex.data(), nonce_hex.size());
  std::string text = json::serialize(object) + "\n";
  write_text(path, text, /*secret=*/true);
  OPENSSL_cleanse(text.data(), text.size());
  return state;
}

std::string media_key_json(const std::string& identity, const client::MediaKey& key) {
  json::object object;
  object["identity"] = identity;
  object["conference_id"] = client::base64url_encode(key.conference_id);
  object["key_id"] = client::base64url_encode(key.key_id);
  object["suite"] = key.suite;
  object["master_key"] = to_hex(key.master_key);
  object["master_salt"] = to_hex(key.master_salt);
  return json::serialize(object) + "\n";
}

void write_media_key(const std::string& path, const std::string& identity,
                     const client::MediaKey& key) {
  std::string text = media_key_json(identity, key);
  write_text(path, text, /*secret=*/true);
  OPENSSL_cleanse(text.data(), text.size());
}

MediaKeyFile read_media_key(const std::string& path) {
  const json::value value = parse_file(path);
  const auto& object = object_of(value, path);
  MediaKeyFile key = media_key_from(object, path, "identity");
  key.conference_id = b64_field(object, "conference_id", path);
  return key;
}

std::vector<MediaKeyFile> read_bridge_keys(const std::string& path) {
  const json::value value = parse_file(path);
  const auto& object = object_of(value, path);
  const client::Bytes conference = b64_field(object, "conference_id", path);
  const json::value* keys = object.if_contains("keys");
  if (!keys || !keys->is_array()) throw std::runtime_error(path + ": missing keys");
  std::vector<MediaKeyFile> result;
  for (const json::value& item : keys->as_array()) {
    MediaKeyFile key = media_key_from(object_of(item, path), path, "member_id");
    key.conference_id = conference;
    result.push_back(std::move(key));
  }
  return result;
}

}  // namespace kms::tools
