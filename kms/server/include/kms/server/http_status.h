// The HTTP status each protocol error code is answered with (docs/SERVER.md "Errors",
// docs/PROTOCOL.md "Errors"). The domain keeps only its stable codes; HTTP is the server's.
#pragma once

#include "kms/errors.h"

namespace kms::server {

unsigned http_status_for(ErrorCode code);

}  // namespace kms::server
