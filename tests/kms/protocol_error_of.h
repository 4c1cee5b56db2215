// The ProtocolError code a call throws, for tests that assert specific refusals.
#pragma once

#include <gtest/gtest.h>

#include <functional>

#include "kms/errors.h"

namespace kmstest {

// ADD_FAILURE and internal_error if the call throws no ProtocolError.
inline kms::ErrorCode error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const kms::ProtocolError& error) {
    return error.code();
  }
  ADD_FAILURE() << "expected a ProtocolError";
  return kms::ErrorCode::internal_error;
}

}  // namespace kmstest
