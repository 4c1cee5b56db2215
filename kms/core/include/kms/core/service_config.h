// Settings shared by the key-request and bridge services (kmsd fills them from its TOML).
#pragma once

#include <cstdint>
#include <functional>

namespace kms {

struct ServiceConfig {
  // Envelope timestamps must lie within [now - window, now + window].
  std::int64_t freshness_window_seconds = 300;
  // A conference expires this long after its creation (its first admission).
  std::int64_t conference_lifetime_seconds = 24 * 3600;
  // Unix seconds; empty: the system clock. Tests inject fixed times.
  std::function<std::int64_t()> clock;

  std::int64_t now() const;
};

}  // namespace kms
