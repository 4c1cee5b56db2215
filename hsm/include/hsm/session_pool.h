// A pool of PKCS#11 sessions on one token: one session per concurrent operation, a pinned
// login session that owns long-lived session objects, and recovery from lost sessions,
// lost handles, lost login and lost devices. Token calls are never serialised by one
// global lock: each operation has its own session.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "hsm/error.h"
#include "hsm/session.h"

namespace hsm {

// A token object named by label and/or CKA_ID; the pool finds it once and caches the handle.
struct KeyRef {
  std::string label;
  Bytes id;
  CK_OBJECT_CLASS object_class = CKO_SECRET_KEY;
  auto operator<=>(const KeyRef&) const = default;
};

struct PoolConfig {
  std::size_t max_sessions = 8;  // upper bound on concurrent operations
  std::chrono::milliseconds acquire_timeout{5000};
  int max_retries = 2;  // re-runs of an operation after a recovered fault
};

struct PoolStats {
  std::size_t open_sessions = 0;
  std::size_t in_use = 0;
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_replaced = 0;  // dropped by the token, found invalid
  std::uint64_t handles_refound = 0;    // after CKR_OBJECT_HANDLE_INVALID / KEY_HANDLE_INVALID
  std::uint64_t relogins = 0;           // after CKR_USER_NOT_LOGGED_IN
  std::uint64_t reinitializations = 0;  // after CKR_DEVICE_ERROR / CKR_TOKEN_NOT_PRESENT
  std::uint64_t acquire_timeouts = 0;
};

class SessionPool {
 public:
  // Opens and logs in the pinned session (CKU_USER) at once: a wrong PIN fails here.
  SessionPool(std::shared_ptr<Module> module, CK_SLOT_ID slot, SecureString user_pin,
              PoolConfig config = {});
  ~SessionPool();  // closes sessions; never calls C_Logout
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  // A session borrowed from the pool, returned on destruction.
  class Lease {
   public:
    Lease(SessionPool& pool, std::unique_ptr<Session> session);
    ~Lease();
    Lease(Lease&&) noexcept;
    Lease& operator=(Lease&&) = delete;
    Session& session() noexcept { return *session_; }
    void discard() noexcept { discard_ = true; }  // close it instead of returning it

   private:
    SessionPool* pool_;
    std::unique_ptr<Session> session_;
    bool discard_ = false;
  };
  // Waits up to acquire_timeout; throws hsm::Error(CKR_FUNCTION_FAILED, "SessionPool::acquire").
  Lease acquire();

  // Runs op(Session&) on a pooled session. After a recoverable fault it repairs what was
  // lost (session, handles, login, module) and runs op again, at most max_retries times.
  // op must be safe to re-run and must look handles up through resolve() inside.
  template <class Op>
  std::invoke_result_t<Op&, Session&> run(Op&& op) {
    for (int attempt = 0;; ++attempt) {
      Lease lease = acquire();
      try {
        return op(lease.session());
      } catch (const Error& error) {
        if (attempt >= config_.max_retries || !recover(lease, error)) throw;
      }
    }
  }

  // Runs op on the pinned session, serialised: for objects that must outlive worker
  // sessions (session objects die with the session that created them). Same recovery.
  template <class Op>
  std::invoke_result_t<Op&, Session&> run_pinned(Op&& op) {
    for (int attempt = 0;; ++attempt) {
      std::unique_lock lock(pinned_mutex_);
      try {
        return op(*pinned_);
      } catch (const Error& error) {
        lock.unlock();
        if (attempt >= config_.max_retries || !recover_pinned(error)) throw;
      }
    }
  }

  // The handle of a token object, cached after the first C_FindObjects. Throws
  // hsm::Error(CKR_KEY_HANDLE_INVALID, "resolve") naming the label if it is not there.
  CK_OBJECT_HANDLE resolve(Session& session, const KeyRef& ref);
  void forget_handles();  // drop the handle cache (the next resolve re-finds)

  // Changes whenever session objects may have been lost (pinned session replaced, module
  // re-initialised). Caches of session-object handles compare it before use.
  std::uint64_t session_object_generation() const noexcept;

  std::shared_ptr<Module> module() const noexcept { return module_; }
  CK_SLOT_ID slot() const noexcept { return slot_; }
  PoolStats stats() const;
  // Token reachable and logged in (C_GetSessionInfo on the pinned session), for /readyz.
  bool ready() const;

  // Observers for metrics: called after every recovery with the error that caused it.
  using RecoveryObserver = std::function<void(const Error&)>;
  void on_recovery(RecoveryObserver observer);

 private:
  friend class Lease;
  void give_back(std::unique_ptr<Session> session, bool discard) noexcept;
  bool recover(Lease& lease, const Error& error);  // true: worth running op again
  bool recover_pinned(const Error& error);
  void reopen_pinned();  // new pinned session + login; bumps the generation
  void reinitialize_module(std::uint64_t seen_generation);

  std::shared_ptr<Module> module_;
  CK_SLOT_ID slot_;
  SecureString pin_;
  PoolConfig config_;

  mutable std::mutex mutex_;  // guards idle_, counters, handle cache; never held in token calls
  std::condition_variable available_;
  std::vector<std::unique_ptr<Session>> idle_;
  std::size_t open_ = 0;
  PoolStats stats_;
  std::map<KeyRef, CK_OBJECT_HANDLE> handles_;
  std::uint64_t object_generation_ = 0;
  std::vector<RecoveryObserver> observers_;

  std::mutex pinned_mutex_;
  std::unique_ptr<Session> pinned_;
};

}  // namespace hsm
