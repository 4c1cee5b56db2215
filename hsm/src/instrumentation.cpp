#include "hsm/instrumentation.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "call.h"

namespace hsm {
namespace detail {

std::atomic<bool> g_call_observer_installed{false};

namespace {
std::atomic<std::shared_ptr<const CallObserver>> g_call_observer;

// One slot per thread that ever made a token call; a slot outlives its thread (it is
// shared with the registry), and the registry drops slots whose thread is gone.
std::mutex g_slots_mutex;
std::vector<std::shared_ptr<std::atomic<std::int64_t>>> g_slots;
}  // namespace

std::atomic<std::int64_t>& call_slot() {
  thread_local const std::shared_ptr<std::atomic<std::int64_t>> slot = [] {
    auto fresh = std::make_shared<std::atomic<std::int64_t>>(0);
    std::lock_guard lock(g_slots_mutex);
    std::erase_if(g_slots, [](const auto& s) { return s.use_count() == 1; });
    g_slots.push_back(fresh);
    return fresh;
  }();
  return *slot;
}

void notify_call(const char* function, CK_RV rv, std::chrono::nanoseconds elapsed) {
  const auto observer = g_call_observer.load(std::memory_order_acquire);
  if (observer) (*observer)(function, rv, elapsed);
}

}  // namespace detail

std::chrono::nanoseconds oldest_call_in_flight() {
  const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  std::int64_t oldest = 0;
  std::lock_guard lock(detail::g_slots_mutex);
  for (const auto& slot : detail::g_slots) {
    const std::int64_t started = slot->load(std::memory_order_relaxed);
    if (started != 0 && now - started > oldest) oldest = now - started;
  }
  return std::chrono::nanoseconds(oldest);
}

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
