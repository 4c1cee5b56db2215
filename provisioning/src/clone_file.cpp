#include "clone_file.h"

#include <map>
#include <sstream>

#include "encoding.h"
#include "errors.h"
#include "tokens/key_check_value.h"
#include "tokens/key_templates.h"

namespace provisioning {
namespace {

constexpr std::size_t kWrappedKeyBytes = 40;

const std::vector<std::string>& kms_key_labels() {
  static const std::vector<std::string> labels{std::string(tokens::kMasterKeyLabel),
                                               std::string(tokens::kStorageKeyLabel),
                                               std::string(tokens::kTransportKeyLabel)};
  return labels;
}

hsm::Bytes hex_field(const std::string& text, std::size_t size, const std::string& where) {
  auto bytes = from_hex(text);
  if (!bytes || bytes->size() != size) {
    throw BadKeyMaterialError(where + ": expected " + std::to_string(size * 2) + " hex digits");
  }
  return *bytes;
}

}  // namespace

const ClonedKey& CloneFile::key(const std::string& label) const {
  for (const ClonedKey& key : keys) {
    if (key.label == label) return key;
  }
  throw BadKeyMaterialError("the clone file has no key " + label);
}

std::string format_clone_file(const CloneFile& file) {
  std::string text =
      "# KMS keys RFC 5649-wrapped under a cloning key made of key components "
      "(kms-provision clone)\n# format: 1\n# profile: " +
      file.profile + "\n# cloning_key_kcv: " + to_hex(file.cloning_key_kcv) +
      "\n# transport_check: " + to_hex(file.transport_check) + "\n";
  for (const ClonedKey& key : file.keys) {
    text += "key " + key.label + " " + to_hex(key.kcv) + " " + to_hex(key.wrapped) + "\n";
  }
  return text;
}

CloneFile parse_clone_file(const std::string& text, const std::string& path) {
  CloneFile file;
  std::map<std::string, std::string> header;
  std::istringstream in(text);
  std::string line;
  std::size_t number = 0;
  bool first = true;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = path + ": line " + std::to_string(number);
    if (line.empty()) continue;
    if (line[0] == '#') {
      const auto colon = line.find(": ");
      if (first || colon == std::string::npos || line.size() < 2 || line[1] != ' ') {
        first = false;
        continue;  // the comment line
      }
      const std::string name = line.substr(2, colon - 2);
      if (!header.emplace(name, line.substr(colon + 2)).second) {
        throw BadKeyMaterialError(where + ": header field " + name + " repeated");
      }
      continue;
    }
    first = false;
    if (header.empty()) {
      throw BadKeyMaterialError(path + ": not a clone file (no header before line " +
                                std::to_string(number) + ")");
    }
    std::istringstream fields(line);
    std::string tag, label, kcv, wrapped, extra;
    fields >> tag >> label >> kcv >> wrapped;
    if (tag != "key" || wrapped.empty() || (fields >> extra)) {
      throw BadKeyMaterialError(where + ": expected \"key LABEL KCV WRAPPED\"");
    }
    bool known = false;
    for (const auto& name : kms_key_labels()) known = known || name == label;
    if (!known) throw BadKeyMaterialError(where + ": " + label + " is not a KMS key");
    for (const ClonedKey& key : file.keys) {
      if (key.label == label) throw BadKeyMaterialError(where + ": " + label + " repeated");
    }
    file.keys.push_back({label, hex_field(kcv, tokens::kKeyCheckValueBytes, where),
                         hex_field(wrapped, kWrappedKeyBytes, where)});
  }
  auto field = [&](const std::string& name) {
    const auto found = header.find(name);
    if (found == header.end()) {
      throw BadKeyMaterialError(path + ": not a clone file (no \"# " + name + ":\" line)");
    }
    return found->second;
  };
  if (field("format") != "1") {
    throw BadKeyMaterialError(path + ": clone file format " + field("format") +
                              " is not supported (expected 1)");
  }
  file.profile = field("profile");
  file.cloning_key_kcv =
      hex_field(field("cloning_key_kcv"), tokens::kKeyCheckValueBytes, path + ": cloning_key_kcv");
  file.transport_check =
      hex_field(field("transport_check"), kWrappedKeyBytes, path + ": transport_check");
  if (file.keys.size() != kms_key_labels().size()) {
    throw BadKeyMaterialError(path +
                              ": a clone file holds kms/master, kms/storage and "
                              "kms/transport; this one has " +
                              std::to_string(file.keys.size()) + " keys");
  }
  return file;
}

}  // namespace provisioning
