#include "hsm/session_pool.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>
#include <utility>

namespace hsm {
namespace {

// Leases and pinned operations this thread holds, of any pool (SessionPool::ThreadScope).
thread_local int t_pool_scopes = 0;

// Session-object generations are unique numbers (compared for equality only): one can be
// promised to a fresh instance before the pool switches to it (on_fresh_instance()).
std::atomic<std::uint64_t> g_last_object_generation{0};
std::uint64_t next_object_generation() noexcept {
  return g_last_object_generation.fetch_add(1) + 1;
}

// For the recycle's work that may wait: the caches' filling of a fresh instance and the old
// instance's C_Finalize use the CPU that requests leave idle instead of competing with them.
// Linux nices threads one by one; an unprivileged thread cannot raise its priority again,
// so this work runs on threads of its own.
constexpr int kBackgroundNice = 10;
void lower_this_threads_priority() noexcept {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kBackgroundNice);
}

}  // namespace

SessionPool::ThreadScope::ThreadScope() noexcept { ++t_pool_scopes; }
SessionPool::ThreadScope::~ThreadScope() { --t_pool_scopes; }
bool SessionPool::ThreadScope::inside() noexcept { return t_pool_scopes > 0; }

SessionPool::SessionPool(std::shared_ptr<Module> module, CK_SLOT_ID slot, SecureString user_pin,
                         PoolConfig config)
    : module_(std::move(module)), slot_(slot), pin_(std::move(user_pin)), config_(config) {
  if (config_.max_sessions == 0) config_.max_sessions = 1;
  apply_session_limit();
  next_recycle_at_ = this->module()->objects_created() + config_.recycle_after_objects;
  std::lock_guard lock(pinned_mutex_);
  reopen_pinned_locked();
}

void SessionPool::apply_session_limit() {
  const CK_TOKEN_INFO info = module()->token_info(slot_);
  token_info_ = info;
  const auto limited = [](CK_ULONG value) {
    return value != CK_EFFECTIVELY_INFINITE && value != CK_UNAVAILABLE_INFORMATION;
  };
  CK_ULONG limit = 0;
  std::string field;
  if (limited(info.ulMaxSessionCount)) {
    limit = info.ulMaxSessionCount;
    field = "ulMaxSessionCount";
  }
  if (!config_.read_only && limited(info.ulMaxRwSessionCount) &&
      (limit == 0 || info.ulMaxRwSessionCount < limit)) {
    limit = info.ulMaxRwSessionCount;
    field = "ulMaxRwSessionCount";
  }
  if (limit == 0) return;
  // One of the token's sessions is the pinned one.
  const std::size_t workers = limit > 1 ? static_cast<std::size_t>(limit - 1) : 1;
  if (config_.max_sessions <= workers) return;
  warnings_.push_back("the token allows " + std::to_string(limit) + " sessions (" + field +
                      "): max_sessions lowered from " + std::to_string(config_.max_sessions) +
                      " to " + std::to_string(workers) + ", plus the pinned session");
  config_.max_sessions = workers;
}

SessionPool::~SessionPool() {
  // Sessions close through their destructors. No C_Logout: on SoftHSM it would destroy
  // every private session object of the process.
  finish_retiring();
  {
    std::lock_guard filler(filler_mutex_);
    filler_stopping_ = true;
    filler_wake_.notify_all();
  }
  if (filler_.joinable()) filler_.join();
  std::lock_guard lock(mutex_);
  idle_.clear();
}

// ---------------------------------------------------------------------------------------
// Leases

SessionPool::Lease::Lease(SessionPool& pool, std::unique_ptr<Session> session)
    : pool_(&pool), session_(std::move(session)) {
  ++t_pool_scopes;
}

SessionPool::Lease::~Lease() {
  if (pool_ == nullptr) return;  // moved from
  if (session_) pool_->give_back(std::move(session_), discard_);
  --t_pool_scopes;
}

SessionPool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      session_(std::move(other.session_)),
      discard_(other.discard_) {}

SessionPool::Lease SessionPool::acquire() {
  using Clock = std::chrono::steady_clock;
  // After CKR_SESSION_COUNT: how long to wait for a session of ours before C_OpenSession is
  // tried again (the sessions the token counts may belong to other applications).
  constexpr std::chrono::milliseconds kSessionCountRetry{50};
  const auto deadline = Clock::now() + config_.acquire_timeout;
  for (bool refused = false;;) {
    std::unique_ptr<Session> session;
    bool fresh = false;
    // The instance this lease belongs to: it cannot change before the lease is given back
    // (a recycle with a fresh instance switches only after the drain).
    std::shared_ptr<Module> module;
    {
      std::unique_lock lock(mutex_);
      if (refused) {
        available_.wait_until(lock, std::min(deadline, Clock::now() + kSessionCountRetry),
                              [this] { return !idle_.empty(); });
        if (idle_.empty() && Clock::now() >= deadline) {
          ++stats_.acquire_timeouts;
          throw Error(ErrorKind::pool_exhausted, "SessionPool::acquire",
                      "the token refused a new session (CKR_SESSION_COUNT: it holds as many "
                      "as it allows) and none was given back for " +
                          std::to_string(config_.acquire_timeout.count()) + " ms");
        }
      }
      for (;;) {
        // A recycle under way: wait for it, unless this thread holds a lease or the pinned
        // session (the recycle waits for those to come back).
        if (recycling_ && !ThreadScope::inside()) {
          if (available_.wait_until(lock, deadline) == std::cv_status::timeout && recycling_) {
            ++stats_.acquire_timeouts;
            throw Error(ErrorKind::pool_exhausted, "SessionPool::acquire",
                        "the module was being recycled for " +
                            std::to_string(config_.acquire_timeout.count()) + " ms");
          }
          continue;
        }
        if (!idle_.empty()) {
          // Recently given back: it answered its last call (validate_after_idle).
          fresh = Clock::now() - idle_.back().since < config_.validate_after_idle;
          session = std::move(idle_.back().session);
          idle_.pop_back();
          break;
        }
        if (open_ < config_.max_sessions) {
          ++open_;  // reserve the place; the session is opened outside the lock
          break;
        }
        if (available_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
            open_ >= config_.max_sessions) {
          ++stats_.acquire_timeouts;
          throw Error(ErrorKind::pool_exhausted, "SessionPool::acquire",
                      "all " + std::to_string(config_.max_sessions) + " sessions busy for " +
                          std::to_string(config_.acquire_timeout.count()) + " ms");
        }
      }
    }
    module = current_module();
    try {
      for (int attempt = 0;; ++attempt) {
        const std::uint64_t generation = module->generation();
        try {
          if (session && session->generation() != generation) {
            session.reset();  // from before a re-initialisation: dead, nothing to close
            count(&PoolStats::sessions_replaced);
          } else if (session && config_.validate_on_acquire && !fresh && !session->valid()) {
            session.reset();
            count(&PoolStats::sessions_replaced);
            ensure_pinned();  // whatever dropped this session may have dropped the rest
          }
          if (!session) session = open_session(module, slot_.load());
          // After a re-initialisation a new session sees only public objects until the
          // pinned session has logged in again (login is per application): never hand one
          // out before.
          if (login_generation_.load() != session->generation()) ensure_pinned();
          break;
        } catch (const Error& error) {
          // The token is gone or broken: re-initialise (once for all threads) and retry.
          if (attempt >= config_.max_retries || !error.device_lost()) throw;
          session.reset();
          fresh = false;
          try {
            reinitialize_module(generation);
          } catch (const Error&) {
            throw error;  // still broken: report what the operation met
          }
          notify_recovery(error);
        }
      }
    } catch (const Error& error) {
      {
        std::lock_guard lock(mutex_);
        --open_;
        available_.notify_one();
      }
      // The token holds all the sessions it allows: a busy pool, not a broken device.
      if (error.kind() == ErrorKind::pkcs11 && error.rv() == CKR_SESSION_COUNT) {
        count(&PoolStats::session_count_refusals);
        refused = true;
        continue;
      }
      throw;
    } catch (...) {
      std::lock_guard lock(mutex_);
      --open_;
      available_.notify_one();
      throw;
    }
    return Lease(*this, std::move(session));
  }
}

std::unique_ptr<Session> SessionPool::open_session(std::shared_ptr<Module> module,
                                                   CK_SLOT_ID slot) {
  auto session = std::make_unique<Session>(std::move(module), slot, !config_.read_only);
  count(&PoolStats::sessions_opened);
  return session;
}

void SessionPool::give_back(std::unique_ptr<Session> session, bool discard) noexcept {
  const bool keep = !discard && session->generation() == current_module()->generation();
  if (!keep) session.reset();  // C_CloseSession, outside the pool lock
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (keep) {
    idle_.push_back(IdleSession{std::move(session), now});
  } else {
    --open_;
  }
  available_.notify_one();
  if (recycling_) drained_.notify_all();
}

void SessionPool::drop_idle_sessions() {
  std::vector<IdleSession> dropped;
  {
    std::lock_guard lock(mutex_);
    dropped.swap(idle_);
    open_ -= dropped.size();
    available_.notify_all();
  }
  // Closed here, outside the lock (stale generations skip C_CloseSession).
}

// ---------------------------------------------------------------------------------------
// Handles

CK_OBJECT_HANDLE SessionPool::resolve(Session& session, const KeyRef& ref) {
  const std::uint64_t generation = session.generation();
  {
    std::lock_guard lock(mutex_);
    const auto cached = handles_.find(ref);
    if (cached != handles_.end() && cached->second.module_generation == generation) {
      return cached->second.handle;
    }
  }
  AttributeTemplate match;
  match.set_ulong(CKA_CLASS, ref.object_class);
  match.set_bool(CKA_TOKEN, true);
  if (!ref.label.empty()) match.set_string(CKA_LABEL, ref.label);
  if (!ref.id.empty()) match.set_bytes(CKA_ID, ref.id);
  // Read before the search: a login completed during it must not turn a miss made without
  // login into "no such key".
  const bool logged_in_before = login_generation_.load() == generation;
  const auto found = session.find_one(std::move(match));
  if (!found) {
    // A session without login sees only public objects: that is a lost login, not a
    // missing key.
    const CK_STATE state = session.state();
    if (!logged_in_before || state == CKS_RO_PUBLIC_SESSION || state == CKS_RW_PUBLIC_SESSION) {
      throw Error(ErrorKind::not_logged_in, "resolve", "looking up '" + ref.label + "'");
    }
    throw Error(ErrorKind::not_found, "resolve",
                "no object labelled '" + ref.label + "'" + (ref.id.empty() ? "" : " with that ID") +
                    " in the token");
  }
  std::lock_guard lock(mutex_);
  handles_[ref] = CachedHandle{*found, generation};
  return *found;
}

void SessionPool::forget_handles() {
  std::lock_guard lock(mutex_);
  handles_.clear();
}

// ---------------------------------------------------------------------------------------
// Recovery

bool SessionPool::recover(Lease& lease, const Error& error) {
  const std::uint64_t generation = lease.session().generation();
  if (error.session_lost() || error.device_lost()) lease.discard();
  return repair(error, generation);
}

bool SessionPool::recover_pinned(const Error& error) {
  std::uint64_t generation;
  {
    std::lock_guard lock(pinned_mutex_);
    generation = pinned_->generation();
  }
  return repair(error, generation);
}

bool SessionPool::repair(const Error& error, std::uint64_t failed_generation) {
  // Only PKCS#11 faults and a lost login are repaired; a missing key or a busy pool is not
  // (Error's predicates are false for those kinds).
  try {
    if (error.device_lost()) {
      reinitialize_module(failed_generation);
    } else if (error.session_lost()) {
      count(&PoolStats::sessions_replaced);
      drop_idle_sessions();  // C_CloseAllSessions kills them all; reopen lazily
      ensure_pinned();
    } else if (error.handle_lost()) {
      count(&PoolStats::handles_refound);
      forget_handles();
      ensure_pinned();  // session objects die with the pinned session
    } else if (error.not_logged_in()) {
      relogin();
    } else {
      return false;
    }
  } catch (const Error&) {
    return false;  // the repair failed too (e.g. token still absent): report the original
  }
  notify_recovery(error);
  return true;
}

void SessionPool::relogin() {
  std::lock_guard lock(pinned_mutex_);
  if (pinned_stale_locked() || !pinned_->valid()) {
    reopen_pinned_locked();
  } else {
    pinned_->login(CKU_USER, pin_);  // logs in every session of this application
    // A logout (SoftHSM) destroys the application's private session objects.
    object_generation_.store(next_object_generation());
  }
  count(&PoolStats::relogins);
}

void SessionPool::ensure_pinned() {
  std::lock_guard lock(pinned_mutex_);
  if (pinned_stale_locked() || !pinned_->valid()) {
    if (pinned_) count(&PoolStats::sessions_replaced);
    // Every session of the application was closed: SoftHSM forgets the object handles
    // it gave out then, so cached handles go too (re-found on next use).
    forget_handles();
    reopen_pinned_locked();
    return;
  }
  // The session survived but the login may not have (a C_Logout elsewhere in the process).
  const CK_STATE state = pinned_->state();
  if (state == CKS_RO_PUBLIC_SESSION || state == CKS_RW_PUBLIC_SESSION) {
    pinned_->login(CKU_USER, pin_);
    object_generation_.store(next_object_generation());
    count(&PoolStats::relogins);
  }
}

bool SessionPool::pinned_stale_locked() const {
  return !pinned_ || pinned_->generation() != current_module()->generation();
}

void SessionPool::reopen_pinned_locked() {
  auto session = std::make_unique<Session>(current_module(), slot_.load(), !config_.read_only);
  session->login(CKU_USER, pin_);
  const std::uint64_t generation = session->generation();
  pinned_ = std::move(session);  // the old one's session objects are gone or going
  object_generation_.store(next_object_generation());
  login_generation_.store(generation);
  mark_up();
  count(&PoolStats::sessions_opened);
}

void SessionPool::reinitialize_module(std::uint64_t seen_generation) {
  std::lock_guard recovery(recovery_mutex_);
  const std::shared_ptr<Module> module = current_module();  // fixed while recovery_mutex_ is held
  const bool due = module->generation() == seen_generation;
  if (due) {
    std::lock_guard breaker(breaker_mutex_);
    if (breaker_open_ && std::chrono::steady_clock::now() < next_reinit_) {
      count(&PoolStats::reinit_suppressed);
      throw Error(ErrorKind::pool_exhausted, "SessionPool::reinitialize",
                  "token down; next re-initialisation attempt after the backoff");
    }
  }
  try {
    if (due) {
      next_recycle_at_ = module->objects_created() + config_.recycle_after_objects;
      module->reinitialize_if(seen_generation);
      count(&PoolStats::reinitializations);
    }
    // Every session and handle of the old generation is dead. Another pool on the same
    // module may have re-initialised it: the repairs below are needed either way.
    drop_idle_sessions();
    {
      std::lock_guard lock(mutex_);
      handles_.clear();
    }
    std::lock_guard lock(pinned_mutex_);
    if (pinned_stale_locked() || !pinned_->valid()) reopen_pinned_locked();
  } catch (const Error& error) {
    if (due) count(&PoolStats::reinit_failures);
    mark_down(error.what());
    throw;
  }
}

void SessionPool::mark_down(const std::string& reason) {
  {
    std::lock_guard breaker(breaker_mutex_);
    backoff_ = breaker_open_ ? std::min(backoff_ * 2, config_.reinit_backoff_max)
                             : config_.reinit_backoff_min;
    next_reinit_ = std::chrono::steady_clock::now() + backoff_;
    if (breaker_open_) return;  // still down: one report per change
    breaker_open_ = true;
    token_down_ = true;
  }
  notify_health(false, reason);
}

void SessionPool::mark_up() {
  if (!token_down_.load()) return;  // the common case: one atomic load per login
  {
    std::lock_guard breaker(breaker_mutex_);
    if (!breaker_open_) return;
    breaker_open_ = false;
    token_down_ = false;
    backoff_ = std::chrono::milliseconds{0};
  }
  notify_health(true, "logged in again");
}

void SessionPool::notify_health(bool up, const std::string& reason) {
  std::vector<HealthObserver> observers;
  {
    std::lock_guard lock(mutex_);
    observers = health_observers_;
  }
  for (const auto& observer : observers) observer(up, reason);
}

void SessionPool::on_health_change(HealthObserver observer) {
  std::lock_guard lock(mutex_);
  health_observers_.push_back(std::move(observer));
}

bool SessionPool::probe() {
  if (ready()) return true;
  try {
    run_pinned([](Session& session) {
      const CK_STATE state = session.state();  // throws if the session or device is gone
      if (state == CKS_RO_PUBLIC_SESSION || state == CKS_RW_PUBLIC_SESSION) {
        throw Error(ErrorKind::not_logged_in, "SessionPool::probe", "pinned session");
      }
      return state;
    });
  } catch (const Error&) {
    return false;
  }
  return ready();
}

void SessionPool::notify_recovery(const Error& error) {
  std::vector<RecoveryObserver> observers;
  {
    std::lock_guard lock(mutex_);
    observers = observers_;
  }
  for (const auto& observer : observers) observer(error);
}

void SessionPool::on_recovery(RecoveryObserver observer) {
  std::lock_guard lock(mutex_);
  observers_.push_back(std::move(observer));
}

void SessionPool::count(std::uint64_t PoolStats::*counter) {
  std::lock_guard lock(mutex_);
  ++(stats_.*counter);
}

// ---------------------------------------------------------------------------------------
// Recycling

void SessionPool::recycle_if_due() noexcept {
  if (config_.recycle_after_objects == 0 || ThreadScope::inside()) return;
  const std::uint64_t created = current_module()->objects_created();
  const std::uint64_t due_at = next_recycle_at_.load();
  if (created < due_at) return;
  bool background = false;
  {
    std::lock_guard lock(mutex_);
    if (recycling_ || preparing_ || background_recycle_) {
      // Overdue while the caches fill the new instance at low priority: the switch comes
      // now, and what they have not filled yet fills on use.
      if (preparing_ && created - due_at >= config_.recycle_after_objects / 2) {
        prefill_stop_.request_stop();
      }
      return;
    }
    background = config_.fresh_instance && !fresh_instance_failed_;
    background_recycle_ = background;
  }
  if (background) return start_background_recycle();
  try {
    recycle();
  } catch (...) {  // the module is left as a failed recovery leaves it: the next call recovers
  }
}

void SessionPool::start_background_recycle() noexcept {
  // The whole recycle with a fresh instance on a thread of its own: the request that
  // crossed the threshold does not wait for the new instance to load, nor the old to go.
  // At the callers' priority: a recycle starved by other load would let the old instance
  // grow past the bound (only the filling and the C_Finalize run at nice 10).
  const auto run = [this] {
    try {
      Retired old;
      if (!recycle_with_fresh_instance(old).has_value()) recycle_in_place();
      finalise_later(std::move(old));
    } catch (...) {  // as a failed recovery: the next operation recovers
    }
    std::lock_guard lock(mutex_);
    background_recycle_ = false;
  };
  std::lock_guard lock(retire_mutex_);
  if (retirer_.joinable()) retirer_.join();  // an earlier retirement: done by now
  try {
    retirer_ = std::thread(run);
  } catch (...) {
    std::lock_guard state(mutex_);
    background_recycle_ = false;
  }
}

bool SessionPool::recycle() {
  bool fresh = false;
  {
    std::lock_guard lock(mutex_);
    if (recycling_ || preparing_) return false;  // another thread is at it
    fresh = config_.fresh_instance && !fresh_instance_failed_;
  }
  if (fresh) {
    Retired old;
    if (const std::optional<bool> done = recycle_with_fresh_instance(old)) {
      finalise_later(std::move(old));
      return *done;
    }
  }
  return recycle_in_place();
}

bool SessionPool::drain_locked(std::unique_lock<std::mutex>& lock) {
  recycling_ = true;  // from here acquire() waits
  if (drained_.wait_for(lock, config_.recycle_drain_timeout,
                        [this] { return open_ == idle_.size(); })) {
    return true;
  }
  recycling_ = false;
  ++stats_.recycles_abandoned;
  // Try again after a quarter of the threshold more objects.
  next_recycle_at_ = current_module()->objects_created() + config_.recycle_after_objects / 4 + 1;
  available_.notify_all();
  return false;
}

bool SessionPool::recycle_in_place() {
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  {
    std::unique_lock lock(mutex_);
    if (recycling_ || preparing_) return false;  // another thread is at it
    if (!drain_locked(lock)) return false;
  }
  const auto finish = [&] {
    std::lock_guard lock(mutex_);
    recycling_ = false;
    available_.notify_all();
  };
  try {
    std::lock_guard recovery(recovery_mutex_);
    std::lock_guard pinned(pinned_mutex_);  // waits for a pinned operation in flight
    // Counted before C_Finalize: objects created meanwhile by another pool of the module die
    // with this initialisation too.
    const std::shared_ptr<Module> module = current_module();
    next_recycle_at_ = module->objects_created() + config_.recycle_after_objects;
    module->reinitialize_if(module->generation());  // waits for other pools' calls
    drop_idle_sessions();
    {
      std::lock_guard lock(mutex_);
      handles_.clear();
    }
    reopen_pinned_locked();  // logs in again; session_object_generation() changes
  } catch (const Error& error) {
    mark_down(error.what());
    finish();
    throw;
  } catch (...) {
    finish();
    throw;
  }
  const auto pause = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
  std::vector<RecycleObserver> observers;
  {
    std::lock_guard lock(mutex_);
    ++stats_.recycles;
    stats_.longest_recycle_pause_us =
        std::max<std::uint64_t>(stats_.longest_recycle_pause_us, pause.count());
    observers = recycle_observers_;
  }
  finish();
  for (const auto& observer : observers) observer(pause);
  return true;
}

std::optional<bool> SessionPool::recycle_with_fresh_instance(Retired& old) {
  using Clock = std::chrono::steady_clock;
  {
    std::lock_guard lock(mutex_);
    if (recycling_ || preparing_) return false;
    preparing_ = true;  // another recycle() returns false from here
    prefill_stop_ = std::stop_source{};
  }
  // 1. The new instance, logged in, while operations go on in the old one.
  std::shared_ptr<Module> fresh;
  std::unique_ptr<Session> fresh_pinned;
  CK_SLOT_ID fresh_slot = 0;
  try {
    fresh = config_.fresh_instance();
    fresh_slot = slot_of_our_token(*fresh);
    fresh_pinned = std::make_unique<Session>(fresh, fresh_slot, !config_.read_only);
    fresh_pinned->login(CKU_USER, pin_);
  } catch (const Error&) {
    fresh_pinned.reset();
    fresh.reset();  // nothing was created in it: finalised at once
    std::lock_guard lock(mutex_);
    preparing_ = false;
    fresh_instance_failed_ = true;
    ++stats_.fresh_instance_failures;
    return std::nullopt;
  }
  count(&PoolStats::sessions_opened);
  // The caches fill the new instance now, off the request path (e.g. the key store
  // unwraps its hot keys there), stamped with the generation the switch will set.
  const std::uint64_t fresh_generation = next_object_generation();
  prepare_at_low_priority(*fresh_pinned, fresh_generation);

  // 2. The drain: new operations wait while those in flight finish on the old instance, so
  // no operation mixes handles of two instances.
  const auto pause_started = Clock::now();
  {
    std::unique_lock lock(mutex_);
    if (!drain_locked(lock)) {
      preparing_ = false;
      old = Retired{std::move(fresh), std::move(fresh_pinned), {}};  // never used: discarded
      return false;
    }
  }

  // 3. The switch (lock order: recovery_mutex_, pinned_mutex_, mutex_).
  std::chrono::microseconds pause{};
  std::vector<RecycleObserver> observers;
  {
    std::lock_guard recovery(recovery_mutex_);
    std::lock_guard pinned(pinned_mutex_);  // waits for a pinned operation in flight
    std::lock_guard lock(mutex_);
    const std::uint64_t generation = fresh_pinned->generation();
    next_recycle_at_ = fresh->objects_created() + config_.recycle_after_objects;
    {
      std::lock_guard module_lock(module_mutex_);
      old.module = std::exchange(module_, std::move(fresh));
    }
    slot_.store(fresh_slot);
    old.pinned = std::exchange(pinned_, std::move(fresh_pinned));
    for (IdleSession& idle : idle_) old.sessions.push_back(std::move(idle.session));
    open_ -= idle_.size();
    idle_.clear();
    handles_.clear();
    object_generation_.store(fresh_generation);
    login_generation_.store(generation);
    recycling_ = false;
    preparing_ = false;
    pause = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - pause_started);
    ++stats_.recycles;
    stats_.longest_recycle_pause_us =
        std::max<std::uint64_t>(stats_.longest_recycle_pause_us, pause.count());
    observers = recycle_observers_;
    available_.notify_all();
  }
  mark_up();  // a logged-in instance: the token is usable
  // 4. The caller closes the old instance's sessions and finalises it, off the request path.
  for (const auto& observer : observers) observer(pause);
  return true;
}

void SessionPool::prepare_at_low_priority(Session& fresh_pinned, std::uint64_t fresh_generation) {
  std::stop_token stop;
  {
    std::lock_guard lock(mutex_);
    stop = prefill_stop_.get_token();
  }
  std::lock_guard lock(preparer_mutex_);
  if (!preparer_) return;
  const auto prepare = [&]() noexcept {
    try {
      preparer_(fresh_pinned, fresh_generation, stop);
    } catch (...) {  // what it made is lost with nothing else: caches fill on use instead
    }
  };
  std::unique_lock filler(filler_mutex_);
  if (!filler_.joinable()) {
    try {
      filler_ = std::thread([this] { run_filler(); });
    } catch (const std::system_error&) {  // no thread: here, at this thread's priority
      filler.unlock();
      prepare();
      return;
    }
  }
  filler_job_ = prepare;
  filler_wake_.notify_all();
  filler_wake_.wait(filler, [&] { return !filler_job_; });  // run_filler() empties it when done
}

void SessionPool::run_filler() noexcept {
  lower_this_threads_priority();
  std::unique_lock lock(filler_mutex_);
  for (;;) {
    filler_wake_.wait(lock, [&] { return filler_stopping_ || filler_job_; });
    if (!filler_job_) return;  // stopping, nothing left to do
    lock.unlock();
    filler_job_();  // unguarded: only this thread changes it until it is emptied below
    lock.lock();
    filler_job_ = nullptr;
    filler_wake_.notify_all();
  }
}

CK_SLOT_ID SessionPool::slot_of_our_token(const Module& fresh) const {
  const auto same = [](const auto& a, const auto& b) {
    return std::equal(std::begin(a), std::end(a), std::begin(b));
  };
  for (const TokenDescription& token : fresh.tokens()) {
    if (same(token.info.label, token_info_.label) &&
        same(token.info.serialNumber, token_info_.serialNumber) &&
        same(token.info.manufacturerID, token_info_.manufacturerID) &&
        same(token.info.model, token_info_.model)) {
      return token.slot;
    }
  }
  throw Error(ErrorKind::not_found, "SessionPool::recycle",
              "the fresh instance of the module shows no token with this pool's label and serial");
}

void SessionPool::finalise_later(Retired old) noexcept {
  if (!old.module && !old.pinned && old.sessions.empty()) return;
  std::lock_guard lock(finalisers_mutex_);
  std::erase_if(finalisers_, [](Finaliser& finaliser) {
    if (!finaliser.done->load()) return false;
    finaliser.thread.join();  // it is returning
    return true;
  });
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto finalise = [old = std::move(old), done]() mutable {
    lower_this_threads_priority();
    old.sessions.clear();  // C_CloseSession on the old instance
    old.pinned.reset();    // with it the old instance's session objects
    old.module.reset();    // the last Module of the instance: C_Finalize, unload
    done->store(true);
  };
  try {
    finalisers_.reserve(finalisers_.size() + 1);  // push_back below cannot throw
    finalisers_.push_back({std::thread(std::move(finalise)), std::move(done)});
  } catch (...) {
    // No thread: the instance went with the thread's copy of `finalise`, or with
    // `finalise` itself, here.
  }
}

void SessionPool::on_fresh_instance(FreshInstanceObserver observer) {
  std::lock_guard lock(preparer_mutex_);  // waits for a call in progress
  preparer_ = std::move(observer);
}

void SessionPool::finish_retiring() {
  {
    std::lock_guard lock(retire_mutex_);
    if (retirer_.joinable()) retirer_.join();
  }
  std::vector<Finaliser> finalisers;
  {
    std::lock_guard lock(finalisers_mutex_);
    finalisers.swap(finalisers_);
  }
  for (Finaliser& finaliser : finalisers) finaliser.thread.join();
}

void SessionPool::on_recycle(RecycleObserver observer) {
  std::lock_guard lock(mutex_);
  recycle_observers_.push_back(std::move(observer));
}

// ---------------------------------------------------------------------------------------
// State

std::shared_ptr<Module> SessionPool::current_module() const {
  std::lock_guard lock(module_mutex_);
  return module_;
}

std::uint64_t SessionPool::session_object_generation() const noexcept {
  return object_generation_.load();
}

PoolStats SessionPool::stats() const {
  std::lock_guard lock(mutex_);
  PoolStats result = stats_;
  result.open_sessions = open_ + 1;
  result.in_use = open_ - idle_.size();
  result.token_down = token_down_.load();
  result.objects_created = current_module()->objects_created();
  result.recycling = recycling_;
  return result;
}

bool SessionPool::ready() const {
  std::lock_guard lock(pinned_mutex_);
  if (pinned_stale_locked()) return false;
  try {
    const CK_STATE state = pinned_->state();
    return state == CKS_RW_USER_FUNCTIONS || state == CKS_RO_USER_FUNCTIONS;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace hsm
