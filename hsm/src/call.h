// Internal: every PKCS#11 call goes through invoke(), which holds off module
// re-initialisation while the call runs and reports the call to the observer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "hsm/instrumentation.h"
#include "hsm/module.h"

namespace hsm::detail {

extern std::atomic<bool> g_call_observer_installed;
void notify_call(const char* function, CK_RV rv, std::chrono::nanoseconds elapsed);
// This thread's in-flight slot: the steady-clock start of its current call, 0 when idle.
std::atomic<std::int64_t>& call_slot();

// Calls fn and reports it; no lock (used by Module itself around C_Initialize/C_Finalize).
template <class Fn, class... Args>
CK_RV observed(const char* function, Fn fn, Args... args) {
  if (!g_call_observer_installed.load(std::memory_order_relaxed)) return fn(args...);
  const auto start = std::chrono::steady_clock::now();
  std::atomic<std::int64_t>& slot = call_slot();
  slot.store(std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count(),
             std::memory_order_relaxed);
  const CK_RV rv = fn(args...);
  slot.store(0, std::memory_order_relaxed);
  notify_call(function, rv, std::chrono::steady_clock::now() - start);
  return rv;
}

template <class Fn, class... Args>
CK_RV invoke(const Module& module, const char* function, Fn fn, Args... args) {
  const auto guard = module.call_guard();
  return observed(function, fn, args...);
}

}  // namespace hsm::detail

// HSM_CALL(module, C_Decrypt, session, ...): module is an hsm::Module&.
#define HSM_CALL(module, fn, ...) \
  ::hsm::detail::invoke((module), #fn, (module).functions()->fn, __VA_ARGS__)
