#include "hsm/instrumentation.h"

#include <atomic>
#include <memory>

#include "call.h"

namespace hsm {
namespace detail {

std::atomic<bool> g_call_observer_installed{false};

namespace {
std::atomic<std::shared_ptr<const CallObserver>> g_call_observer;
}  // namespace

void notify_call(const char* function, CK_RV rv, std::chrono::nanoseconds elapsed) {
  const auto observer = g_call_observer.load(std::memory_order_acquire);
  if (observer) (*observer)(function, rv, elapsed);
}

}  // namespace detail

void set_call_observer(CallObserver observer) {
  if (observer) {
    detail::g_call_observer.store(std::make_shared<const CallObserver>(std::move(observer)),
                                  std::memory_order_release);
    detail::g_call_observer_installed.store(true, std::memory_order_release);
  } else {
    detail::g_call_observer_installed.store(false, std::memory_order_release);
    detail::g_call_observer.store(nullptr, std::memory_order_release);
  }
}

}  // namespace hsm
