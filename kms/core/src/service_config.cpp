#include "kms/core/service_config.h"

#include <chrono>

namespace kms {

std::int64_t ServiceConfig::now() const {
  if (clock) return clock();
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace kms
