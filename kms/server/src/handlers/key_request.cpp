#include "handlers.h"
#include "kms/server/wire.h"

namespace kms::server::handlers {

Handler key_request(KeyRequestService& service) {
  return [&service](Exchange& exchange) -> Answer {
    return WorkerJob([&service, body = std::move(exchange.body), context = exchange.context] {
      const KeyRequest request = wire::key_request_from_json(body);
      const KeyResponse response = service.handle(request, context);
      return Reply{200, "application/json", wire::key_response_to_json(response)};
    });
  };
}

}  // namespace kms::server::handlers
