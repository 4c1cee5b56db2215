// A pool of PKCS#11 sessions on one token: one session per concurrent operation, a pinned
// login session that owns long-lived session objects, and recovery from lost sessions,
// lost handles, lost login and lost devices. Token calls are never serialised by one
// global lock: each operation has its own session.
//
// Recovery (run(), run_pinned(), acquire()), by the error an operation met:
//   CKR_SESSION_HANDLE_INVALID / CKR_SESSION_CLOSED: the session is closed, idle sessions
//     are dropped (a C_CloseAllSessions kills them all), the pinned session is checked and
//     reopened + logged in if it is gone (that also drops the handle cache: SoftHSM forgets
//     handles when an application's last session closes).
//   CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID / CKR_(UN)WRAPPING_KEY_HANDLE_INVALID:
//     the handle cache is dropped (resolve() finds by label/ID again); pinned/login checked.
//   CKR_USER_NOT_LOGGED_IN: C_Login again on the pinned session (login is per application).
//   CKR_DEVICE_ERROR / CKR_DEVICE_REMOVED / CKR_TOKEN_NOT_PRESENT /
//   CKR_CRYPTOKI_NOT_INITIALIZED: Module::reinitialize_if (C_Finalize + C_Initialize, once
//     for all threads that saw the same generation), then every session and handle of the
//     old generation is dropped and the pinned session reopened and logged in.
// Then the operation runs again (at most max_retries times). Any other error is thrown at
// once, and a session that met a PKCS#11 error that was not recovered is closed, not reused.
// session_object_generation() changes whenever session objects may have been lost (pinned session
// replaced, module re-initialised, login restored after a logout). C_Logout is never called. Leases
// must not outlive the pool, and are given back by the thread that acquired them.
//
// Recycling (recycle(), recycle_after_objects): a planned re-initialisation for a token that
// never frees destroyed session objects (SoftHSM 2.6.1). No operation fails because of it,
// and session objects die with it, so session_object_generation() changes and caches
// rebuild on next use. The policy (how many objects) is the caller's: the pool only counts.
// Two ways, by PoolConfig::fresh_instance:
//   - with a fresh instance (the factory is set): a new instance of the library is loaded,
//     initialised and its pinned session logged in while operations go on; then new
//     operations wait only while those in flight finish (the drain), the pool switches to
//     the new instance, and the old one is closed and finalised on a thread of its own.
//     The recycles recycle_after_objects starts run on a thread of the pool at the callers'
//     priority, so they keep pace with the operations whatever else loads the machine; only
//     the work that may wait runs at nice 10: the caches' filling of the new instance (cut
//     short once the old one has made half a threshold more objects: the bound holds) and
//     the old instance's C_Finalize (after the switch, when it creates nothing more).
//   - in place: new operations wait (up to acquire_timeout) while the operations in flight
//     finish, then C_Finalize + C_Initialize, the pinned session is reopened and logged in.
// module() and slot() change with a recycle with a fresh instance: they are written only
// after the drain, with recovery_mutex_, pinned_mutex_ and mutex_ held.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
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
  // Upper bound on concurrent operations (worker sessions; the pinned session is one more).
  // Capped at construction to what the token allows (CK_TOKEN_INFO.ulMaxSessionCount, and
  // ulMaxRwSessionCount for read/write sessions), minus the pinned session; see warnings().
  std::size_t max_sessions = 8;
  // Open every session, the pinned one included, read-only (CKF_SERIAL_SESSION without
  // CKF_RW_SESSION): token objects can be used but not created, modified or destroyed;
  // session objects (derived, unwrapped) can, as PKCS#11 allows in read-only sessions.
  // For servers that only use keys; a tool that creates token objects needs read/write.
  bool read_only = false;
  // Waits for a free session: for a lease of a busy pool, and after the token refused a
  // new session with CKR_SESSION_COUNT (then until one of the pool's sessions is given
  // back, or the token accepts a new one). Then ErrorKind::pool_exhausted.
  std::chrono::milliseconds acquire_timeout{5000};
  int max_retries = 2;  // re-runs of an operation after a recovered fault
  // C_GetSessionInfo on every idle session handed out, so a session the token dropped is
  // replaced before use rather than after a failed call.
  bool validate_on_acquire = true;
  // ... except for a session given back less than this long ago: it answered its last call,
  // the pool drops idle sessions whenever it learns that sessions were lost, and an
  // operation that meets a session dropped since is repaired and run again anyway. Saves
  // one C_GetSessionInfo per operation on a busy pool. 0: every session handed out.
  std::chrono::milliseconds validate_after_idle{0};
  // Circuit breaker for re-initialisation: after one that did not bring the token back, the
  // next waits reinit_backoff_min, then twice as long each time up to reinit_backoff_max.
  // Meanwhile device errors fail fast (a network HSM is not hammered with C_Initialize),
  // and a token that comes back without needing one is picked up by the session reopen.
  std::chrono::milliseconds reinit_backoff_min{100};
  std::chrono::milliseconds reinit_backoff_max{10000};
  // recycle() once this many objects were created through the module's sessions since the
  // last re-initialisation (checked after each run() / run_pinned()); 0: never.
  std::uint64_t recycle_after_objects = 0;
  // How long recycle() waits for the operations in flight to finish. When they do not (an
  // operation holds a session that long), nothing is recycled, the waiting operations go
  // on, and the next attempt comes after another quarter of recycle_after_objects.
  std::chrono::milliseconds recycle_drain_timeout{1000};
  // Recycle with a fresh instance of the library made by this factory (e.g.
  // Module::load_instance) instead of in place; see the top of this file. If it throws
  // hsm::Error, that recycle and every later one is done in place
  // (PoolStats::fresh_instance_failures).
  std::function<std::shared_ptr<Module>()> fresh_instance;
};

struct PoolStats {
  std::size_t open_sessions = 0;  // worker sessions plus the pinned one
  std::size_t in_use = 0;
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_replaced = 0;  // dropped by the token, found invalid
  std::uint64_t handles_refound = 0;    // after CKR_OBJECT_HANDLE_INVALID / KEY_HANDLE_INVALID
  std::uint64_t relogins = 0;           // after CKR_USER_NOT_LOGGED_IN
  std::uint64_t reinitializations = 0;  // after CKR_DEVICE_ERROR / CKR_TOKEN_NOT_PRESENT
  std::uint64_t acquire_timeouts = 0;
  std::uint64_t session_count_refusals = 0;  // C_OpenSession answered CKR_SESSION_COUNT
  std::uint64_t reinit_failures = 0;     // re-initialisations after which the token was still gone
  std::uint64_t reinit_suppressed = 0;   // attempts refused by the circuit breaker (backoff)
  std::uint64_t recycles = 0;            // planned re-initialisations (recycle())
  std::uint64_t recycles_abandoned = 0;  // operations in flight did not finish in time
  // PoolConfig::fresh_instance failed (module load, C_Initialize, token or login): recycled
  // in place from then on.
  std::uint64_t fresh_instance_failures = 0;
  std::uint64_t objects_created = 0;  // by the module's sessions, since it was loaded
  // The longest time operations were held back by one recycle, in microseconds: what a
  // request may wait because of recycling (with a fresh instance the drain and the switch;
  // in place also C_Finalize, C_Initialize and the login).
  std::uint64_t longest_recycle_pause_us = 0;
  bool recycling = false;   // a recycle is waiting for operations in flight, or running
  bool token_down = false;  // the breaker is open: the last recovery failed
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
  // Waits up to acquire_timeout; throws hsm::Error(ErrorKind::pool_exhausted,
  // "SessionPool::acquire"). The session handed out is valid (checked with C_GetSessionInfo,
  // replaced if dropped) and belongs to a module generation whose login is established.
  // CKR_SESSION_COUNT from C_OpenSession (the token holds as many sessions as it allows,
  // perhaps for other applications) is not a fault: acquire waits for a session to be
  // given back, retrying C_OpenSession now and then, as for a busy pool.
  Lease acquire();

  // Runs op(Session&) on a pooled session. After a recoverable fault it repairs what was
  // lost (session, handles, login, module) and runs op again, at most max_retries times.
  // op must be safe to re-run and must look handles up through resolve() inside.
  template <class Op>
  std::invoke_result_t<Op&, Session&> run(Op&& op) {
    const RecycleCheck recycle_check(*this);  // after the lease below is given back
    for (int attempt = 0;; ++attempt) {
      Lease lease = acquire();
      try {
        return op(lease.session());
      } catch (const Error& error) {
        if (attempt >= config_.max_retries || !recover(lease, error)) {
          // After a failed call the session's state is unknown (a device fault may leave an
          // operation active): close it rather than hand it to the next request.
          if (error.kind() == ErrorKind::pkcs11) lease.discard();
          throw;
        }
      }
    }
  }

  // Runs op on the pinned session, serialised: for objects that must outlive worker
  // sessions (session objects die with the session that created them). Same recovery.
  template <class Op>
  std::invoke_result_t<Op&, Session&> run_pinned(Op&& op) {
    const RecycleCheck recycle_check(*this);  // after the pinned session is released
    for (int attempt = 0;; ++attempt) {
      const ThreadScope scope;
      std::unique_lock lock(pinned_mutex_);
      try {
        if (pinned_stale_locked()) reopen_pinned_locked();
        return op(*pinned_);
      } catch (const Error& error) {
        lock.unlock();
        if (attempt >= config_.max_retries || !recover_pinned(error)) throw;
      }
    }
  }

  // The handle of a token object (CKA_TOKEN=TRUE, ref's class, label and/or ID), cached
  // after the first C_FindObjects (per module generation). Throws
  // hsm::Error(ErrorKind::not_found, "resolve") naming the label if it is not there (not
  // retried by run()), or ErrorKind::not_logged_in if the session lost its login (or had
  // not yet regained it after a re-initialisation) and therefore cannot see private
  // objects (retried after a re-login).
  CK_OBJECT_HANDLE resolve(Session& session, const KeyRef& ref);
  void forget_handles();  // drop the handle cache (the next resolve re-finds)

  // Changes whenever session objects may have been lost (pinned session replaced, module
  // re-initialised). Caches of session-object handles compare it before use.
  std::uint64_t session_object_generation() const noexcept;

  // The instance in use now (another one after a recycle with a fresh instance).
  std::shared_ptr<Module> module() const { return current_module(); }
  CK_SLOT_ID slot() const noexcept { return slot_.load(); }
  // The effective configuration (max_sessions after the token's session limit).
  const PoolConfig& config() const noexcept { return config_; }
  // What the pool changed from its configuration at construction, one sentence each, for
  // the caller's log (e.g. max_sessions lowered to the token's ulMaxSessionCount).
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }
  PoolStats stats() const;
  // Token reachable and logged in (C_GetSessionInfo on the pinned session), for /readyz.
  bool ready() const;
  // ready(), and when not, one recovery attempt first (reopen + login of the pinned
  // session, re-initialisation within the breaker's backoff): readiness heals without
  // traffic, and a balancer polling it brings the node back by itself.
  bool probe();

  // Called once per change of the breaker's state (down: the error that kept the token
  // from coming back; up: the token is usable again), for one log line per change. An
  // observer must not call back into the pool.
  using HealthObserver = std::function<void(bool up, const std::string& reason)>;
  void on_health_change(HealthObserver observer);

  // Observers for metrics: called after every recovery with the error that caused it.
  using RecoveryObserver = std::function<void(const Error&)>;
  void on_recovery(RecoveryObserver observer);

  // Re-initialises the module as soon as no operation of this pool is in flight (see the
  // top of this file). Returns false, having changed nothing, when another recycle is
  // under way or the operations in flight did not finish within recycle_drain_timeout.
  // Must not be called while this thread holds a lease or is inside run_pinned().
  // Throws hsm::Error when the re-initialisation or the login fails (then the pool is in
  // the state a failed recovery leaves: the next operation recovers).
  bool recycle();
  // Called after every recycle() that re-initialised, with how long operations were held
  // back; an observer must not call back into the pool.
  using RecycleObserver = std::function<void(std::chrono::microseconds pause)>;
  void on_recycle(RecycleObserver observer);
  // Waits until a recycle with a fresh instance that runs on its own thread (the ones
  // recycle_after_objects starts) has finished, and the instances it left are closed and
  // finalised: for an orderly stop and for tests that measure memory.
  void finish_retiring();
  // A recycle with a fresh instance calls this (one observer; empty: none) on a thread of
  // its own at nice 10 with the fresh instance's logged-in pinned session, before it holds
  // operations back: a cache may create session objects for the new instance there, on that
  // session only, stamped with `object_generation`; they are valid once
  // session_object_generation() equals it (after the switch; never, if the recycle is
  // abandoned). It should return soon after `stop` is requested: the recycle is overdue (the
  // old instance made half a threshold more objects meanwhile). Setting it waits for a call
  // in progress, so an owner can clear it in its destructor.
  using FreshInstanceObserver = std::function<void(Session& pinned, std::uint64_t object_generation,
                                                   const std::stop_token& stop)>;
  void on_fresh_instance(FreshInstanceObserver observer);

 private:
  friend class Lease;
  // Counts, per thread, the leases and pinned operations it holds: a thread holding one
  // neither waits for a recycle (it would wait for itself) nor starts one.
  struct ThreadScope {
    ThreadScope() noexcept;
    ~ThreadScope();
    ThreadScope(const ThreadScope&) = delete;
    ThreadScope& operator=(const ThreadScope&) = delete;
    static bool inside() noexcept;
  };
  // Recycles when due, on the way out of run() / run_pinned() of a thread that holds
  // nothing else of a pool (never throws: a failed recycle is left to recovery).
  struct RecycleCheck {
    explicit RecycleCheck(SessionPool& pool) noexcept : pool(pool) {}
    ~RecycleCheck() { pool.recycle_if_due(); }
    RecycleCheck(const RecycleCheck&) = delete;
    RecycleCheck& operator=(const RecycleCheck&) = delete;
    SessionPool& pool;
  };
  struct IdleSession {
    std::unique_ptr<Session> session;
    std::chrono::steady_clock::time_point since;  // given back at
  };
  void recycle_if_due() noexcept;
  // What a recycle with a fresh instance leaves behind, closed and finalised by
  // finalise_later().
  struct Retired {
    std::shared_ptr<Module> module;
    std::unique_ptr<Session> pinned;
    std::vector<std::unique_ptr<Session>> sessions;
  };
  // A thread that closes and finalises a Retired; `done` once it has.
  struct Finaliser {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  bool recycle_in_place();
  // With mutex_ held (by `lock`): sets recycling_ (new operations wait) and waits up to
  // recycle_drain_timeout for every lease to come back. False: abandoned (counted, retried
  // after a quarter of the threshold more objects), recycling_ cleared again.
  bool drain_locked(std::unique_lock<std::mutex>& lock);
  // nullopt: no fresh instance could be made; the caller recycles in place. Leaves in `old`
  // what the caller must close and finalise (the old instance, or an unused fresh one).
  std::optional<bool> recycle_with_fresh_instance(Retired& old);
  void start_background_recycle() noexcept;  // on retirer_
  // Runs the preparer (on_fresh_instance()) on filler_ and waits.
  void prepare_at_low_priority(Session& fresh_pinned, std::uint64_t fresh_generation);
  void run_filler() noexcept;  // filler_'s loop
  // The slot of `fresh` that holds this pool's token (same label, serial, manufacturer, model).
  CK_SLOT_ID slot_of_our_token(const Module& fresh) const;
  // On a thread of its own at nice 10 (C_Finalize of SoftHSM with many objects takes
  // ~100 ms of CPU), not waited for: a starved one delays no recycle. Joins the finished.
  void finalise_later(Retired old) noexcept;
  struct CachedHandle {
    CK_OBJECT_HANDLE handle;
    std::uint64_t module_generation;  // handles die with the module's initialisation
  };
  void give_back(std::unique_ptr<Session> session, bool discard) noexcept;
  std::unique_ptr<Session> open_session(std::shared_ptr<Module> module, CK_SLOT_ID slot);
  void apply_session_limit();  // constructor: caps config_.max_sessions, notes warnings_
  bool recover(Lease& lease, const Error& error);  // true: worth running op again
  bool recover_pinned(const Error& error);
  bool repair(const Error& error, std::uint64_t failed_generation);
  void relogin();
  void ensure_pinned();              // reopens the pinned session if the token dropped it
  bool pinned_stale_locked() const;  // pinned_mutex_ held: from an earlier module generation
  void reopen_pinned_locked();       // pinned_mutex_ held: new session + login; bumps generation
  void reinitialize_module(std::uint64_t seen_generation);
  void mark_down(const std::string& reason);  // a recovery failed: open the breaker
  void mark_up();                             // after a successful pinned login
  void notify_health(bool up, const std::string& reason);
  void drop_idle_sessions();
  void notify_recovery(const Error& error);
  void count(std::uint64_t PoolStats::*counter);

  // See the top of this file. Read through current_module(): module_mutex_ is a leaf lock
  // (nothing else is taken while it is held).
  std::shared_ptr<Module> current_module() const;
  mutable std::mutex module_mutex_;
  std::shared_ptr<Module> module_;
  std::atomic<CK_SLOT_ID> slot_;
  CK_TOKEN_INFO token_info_{};  // at construction: finds the token in a fresh instance
  SecureString pin_;
  PoolConfig config_;
  std::vector<std::string> warnings_;

  mutable std::mutex mutex_;  // guards idle_, counters, handle cache; never held in token calls
  std::condition_variable available_;
  std::vector<IdleSession> idle_;
  std::size_t open_ = 0;  // worker sessions, idle or leased
  PoolStats stats_;
  std::map<KeyRef, CachedHandle> handles_;
  std::atomic<std::uint64_t> object_generation_{0};
  // The module generation in which the pinned session last logged in: sessions of a newer
  // generation are not handed out (and their misses not trusted) until it catches up.
  std::atomic<std::uint64_t> login_generation_{~std::uint64_t{0}};
  std::vector<RecoveryObserver> observers_;
  std::vector<RecycleObserver> recycle_observers_;  // guarded by mutex_
  bool recycling_ = false;                          // guarded by mutex_: acquire() waits
  bool preparing_ = false;              // guarded by mutex_: a fresh instance is being made
  bool fresh_instance_failed_ = false;  // guarded by mutex_: recycle in place from now on
  bool background_recycle_ = false;     // guarded by mutex_: start_background_recycle() runs
  std::stop_source prefill_stop_;       // guarded by mutex_: the running preparation's
  std::condition_variable drained_;     // a lease came back while recycling_
  // Module::objects_created() at which the next recycle is due.
  std::atomic<std::uint64_t> next_recycle_at_{0};

  std::mutex recovery_mutex_;  // one module re-initialisation at a time
  // Lock order: recovery_mutex_, pinned_mutex_, breaker_mutex_, mutex_. Health observers
  // run with pinned_mutex_ held and must not call back into the pool.
  std::mutex breaker_mutex_;
  bool breaker_open_ = false;
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point next_reinit_{};
  std::atomic<bool> token_down_{false};
  std::vector<HealthObserver> health_observers_;  // guarded by mutex_
  mutable std::mutex pinned_mutex_;
  std::unique_ptr<Session> pinned_;
  std::mutex retire_mutex_;  // guards retirer_
  // Runs the background recycle (one at a time); joined by finish_retiring().
  std::thread retirer_;
  // Fills fresh instances at nice 10, one at a time, for the pool's life: always the same
  // thread, so every instance's cache comes from one malloc arena of glibc's (a thread per
  // fill took another arena now and then, each keeping a cache's worth: the soak's RSS was
  // 264 MiB against 199).
  std::mutex filler_mutex_;  // guards the filler_ fields below; taken after preparer_mutex_
  std::condition_variable filler_wake_;
  std::function<void()> filler_job_;  // the fill to run; emptied when it has run
  bool filler_stopping_ = false;
  std::thread filler_;
  std::mutex finalisers_mutex_;  // guards finalisers_; a leaf lock
  std::vector<Finaliser> finalisers_;
  std::mutex preparer_mutex_;  // held while preparer_ runs
  FreshInstanceObserver preparer_;
};

}  // namespace hsm
