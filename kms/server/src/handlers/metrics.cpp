#include "handlers.h"

namespace kms::server::handlers {

Handler metrics(const Metrics& metrics) {
  return [&metrics](Exchange&) -> Answer {
    return Reply{200, "text/plain; version=0.0.4; charset=utf-8", metrics.render()};
  };
}

}  // namespace kms::server::handlers
