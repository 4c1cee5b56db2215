// Call instrumentation for metrics: one process-wide observer told about every PKCS#11
// call made through hsm::Module / hsm::Session (function name, CK_RV, wall time).
#pragma once

#include <chrono>
#include <functional>

#include "hsm/pkcs11.h"

namespace hsm {

// function: the PKCS#11 name ("C_Decrypt"), a string literal that lives forever.
using CallObserver =
    std::function<void(const char* function, CK_RV rv, std::chrono::nanoseconds elapsed)>;

// Installs (or, with an empty function, removes) the observer. It is called from every
// thread that makes token calls, while the call guard is held: it must be thread-safe and
// cheap, and must not make token calls itself. With no observer installed a token call
// costs one relaxed atomic load extra (no clock reads).
void set_call_observer(CallObserver observer);

// While an observer is installed, every thread's current token call is also tracked (its
// start time in a per-thread slot, no lock): this is how long the longest call now in
// progress has been running, zero when none is. A hung token shows as a call that never
// returns, which kmsd reads without making a token call itself.
std::chrono::nanoseconds oldest_call_in_flight();

}  // namespace hsm
