#include "kms/core/service_config.h"

#include "tokens/unix_time.h"

namespace kms {

std::int64_t ServiceConfig::now() const {
  if (clock) return clock();
  return tokens::unix_now();
}

}  // namespace kms
