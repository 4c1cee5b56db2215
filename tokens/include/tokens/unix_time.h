// The current time in Unix seconds: the one definition for tokens/ and everything above it
// (kms/core's service clock, kmsd's purge; kms/client keeps its own).
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>

namespace tokens {

inline std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (UTC), for messages and listings.
inline std::string utc_timestamp(std::int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

}  // namespace tokens
