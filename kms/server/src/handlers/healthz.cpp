#include "handlers.h"

namespace kms::server::handlers {

Handler healthz() {
  return [](Exchange&) -> Answer { return Reply{200, "application/json", R"({"status":"ok"})"}; };
}

}  // namespace kms::server::handlers
