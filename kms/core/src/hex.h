// Lower-case hex of public identifiers (conference ids, key ids) for audit records.
#pragma once

#include <string>

#include "hsm/secure_bytes.h"

namespace kms {

inline std::string to_hex(hsm::ByteView bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t byte : bytes) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 15];
  }
  return out;
}

}  // namespace kms
