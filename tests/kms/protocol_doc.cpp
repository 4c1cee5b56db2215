#include "protocol_doc.h"

#include <fstream>
#include <regex>
#include <stdexcept>

namespace kmstest {

std::string protocol_doc_path() { return std::string(KMS_SOURCE_DIR) + "/docs/PROTOCOL.md"; }

NamedValues vectors_from_doc(int profile_id) {
  std::ifstream in(protocol_doc_path());
  if (!in) throw std::runtime_error("cannot read " + protocol_doc_path());
  const std::string heading = "### Profile " + std::to_string(profile_id) + " ";
  const std::regex line_pattern(R"(^([A-Za-z0-9_]+)\s+=\s+([0-9a-f]+)\s*$)");
  NamedValues values;
  std::string line;
  bool in_section = false;
  bool in_block = false;
  while (std::getline(in, line)) {
    if (!in_section) {
      in_section = line.rfind(heading, 0) == 0;
      continue;
    }
    if (!in_block) {
      if (line.rfind("```", 0) == 0) in_block = true;
      continue;
    }
    if (line.rfind("```", 0) == 0) break;
    std::smatch match;
    if (std::regex_match(line, match, line_pattern)) {
      values.emplace_back(match[1].str(), from_hex(match[2].str()));
    }
  }
  return values;
}

}  // namespace kmstest
