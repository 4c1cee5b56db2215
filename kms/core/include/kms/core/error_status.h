// The HTTP status each protocol error maps to (docs/PROTOCOL.md "Errors").
#pragma once

#include "kms/errors.h"

namespace kms {

int http_status(ErrorCode code);

}  // namespace kms
