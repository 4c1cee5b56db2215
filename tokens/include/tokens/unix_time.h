// The current time in Unix seconds: the one definition for tokens/ and everything above it
// (kms/core's service clock, kmsd's purge; kms/client keeps its own).
#pragma once

#include <chrono>
#include <cstdint>

namespace tokens {

inline std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace tokens
