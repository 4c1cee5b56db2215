// SessionPool on real tokens: session reuse, concurrency, acquire timeout, handle cache,
// the pinned session and its session objects.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "hsm/instrumentation.h"
#include "openssl_reference.h"
#include "pool_helpers.h"
#include "token_fixture.h"

namespace hsmtest {
namespace {

using hsm::Bytes;
using hsm::Mechanism;
using hsm::Session;

class PoolTest : public TokenTest {
 protected:
  void SetUp() override {
    TokenTest::SetUp();
    Session setup(module_, slot_);
    setup.login(CKU_USER, token_->user_pin());
    create_token_aes_key(setup, "pool-test-key");
  }
  const hsm::KeyRef key_{"pool-test-key", {}, CKO_SECRET_KEY};
};

// Counts calls per PKCS#11 function while alive.
class CallCounter {
 public:
  CallCounter() {
    hsm::set_call_observer([this](const char* function, CK_RV, std::chrono::nanoseconds) {
      std::lock_guard lock(mutex_);
      ++counts_[function];
    });
  }
  ~CallCounter() { hsm::set_call_observer({}); }
  int operator[](const std::string& function) {
    std::lock_guard lock(mutex_);
    return counts_[function];
  }

 private:
  std::mutex mutex_;
  std::map<std::string, int> counts_;
};

TEST_P(PoolTest, ReusesOneWorkerSessionForSequentialOperations) {
  auto& p = pool();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(gcm_round_trip(p, key_));
  const auto stats = p.stats();
  EXPECT_EQ(stats.sessions_opened, 2u);  // the pinned one and one worker
  EXPECT_EQ(stats.open_sessions, 2u);
  EXPECT_EQ(stats.in_use, 0u);
  EXPECT_EQ(stats.sessions_replaced, 0u);
  EXPECT_TRUE(p.ready());
}

TEST_P(PoolTest, LeasesAreDistinctSessionsAndReturnToThePool) {
  auto& p = pool();
  {
    auto a = p.acquire();
    auto b = p.acquire();
    EXPECT_NE(a.session().handle(), b.session().handle());
    EXPECT_EQ(p.stats().in_use, 2u);
    b.discard();
  }
  const auto stats = p.stats();
  EXPECT_EQ(stats.in_use, 0u);
  EXPECT_EQ(stats.open_sessions, 2u);  // a went back; b was closed
}

TEST_P(PoolTest, ConcurrentOperationsEachGetTheirOwnSession) {
  hsm::PoolConfig config;
  config.max_sessions = 3;
  auto& p = pool(config);
  constexpr int kThreads = 4, kOperations = 40;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kOperations; ++i) good += gcm_round_trip(p, key_) ? 1 : 0;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), kThreads * kOperations);
  const auto stats = p.stats();
  EXPECT_LE(stats.open_sessions, config.max_sessions + 1);
  EXPECT_EQ(stats.in_use, 0u);
  EXPECT_EQ(stats.acquire_timeouts, 0u);
}

TEST_P(PoolTest, AcquireTimesOutWhenEverySessionIsBusy) {
  hsm::PoolConfig config;
  config.max_sessions = 1;
  config.acquire_timeout = std::chrono::milliseconds(50);
  auto& p = pool(config);
  std::optional<hsm::SessionPool::Lease> held(p.acquire());
  try {
    p.acquire();
    FAIL() << "acquired a second session from a pool of one";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.kind(), hsm::ErrorKind::pool_exhausted);
    EXPECT_FALSE(error.recoverable());
    EXPECT_EQ(error.function(), "SessionPool::acquire");
  }
  EXPECT_EQ(p.stats().acquire_timeouts, 1u);
  held = std::nullopt;
  EXPECT_NO_THROW(p.acquire());
}

TEST_P(PoolTest, AWaiterGetsTheSessionWhenItIsGivenBack) {
  hsm::PoolConfig config;
  config.max_sessions = 1;
  config.acquire_timeout = std::chrono::seconds(60);  // the waiter must not time out
  auto& p = pool(config);
  std::optional<hsm::SessionPool::Lease> held(p.acquire());
  std::atomic<bool> waiting{false}, acquired{false};
  std::thread waiter([&] {
    waiting = true;
    auto lease = p.acquire();  // blocks until `held` is given back
    acquired = true;
  });
  while (!waiting.load()) std::this_thread::yield();
  // However long the waiter waits, a pool of one must not hand it a second session.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(acquired.load());
  EXPECT_EQ(p.stats().in_use, 1u);
  held.reset();  // the give-back wakes the waiter
  waiter.join();
  EXPECT_TRUE(acquired.load());
  const auto stats = p.stats();
  EXPECT_EQ(stats.acquire_timeouts, 0u);
  EXPECT_EQ(stats.sessions_opened, 2u);  // the pinned session and the one worker session
}

TEST_P(PoolTest, ResolveFindsOnceThenUsesTheCache) {
  auto& p = pool();
  CallCounter calls;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(gcm_round_trip(p, key_));
  EXPECT_EQ(calls["C_FindObjectsInit"], 1);
  p.forget_handles();
  EXPECT_TRUE(gcm_round_trip(p, key_));
  EXPECT_EQ(calls["C_FindObjectsInit"], 2);
}

TEST_P(PoolTest, AMissingKeyIsNamedAndNotRetried) {
  auto& p = pool();
  CallCounter calls;
  const hsm::KeyRef missing{"no-such-key", {}, CKO_SECRET_KEY};
  try {
    p.run([&](Session& s) { return p.resolve(s, missing); });
    FAIL() << "resolved a key that does not exist";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.kind(), hsm::ErrorKind::not_found);
    EXPECT_FALSE(error.recoverable());
    EXPECT_EQ(error.function(), "resolve");
    EXPECT_NE(std::string(error.what()).find("no-such-key"), std::string::npos);
  }
  EXPECT_EQ(calls["C_FindObjectsInit"], 1);
}

TEST_P(PoolTest, PinnedSessionObjectsOutliveWorkerSessions) {
  auto& p = pool();
  const auto generation = p.session_object_generation();
  const Bytes value = reference::random_bytes(32);
  const CK_OBJECT_HANDLE session_key =
      p.run_pinned([&](Session& s) { return s.create_object(known_key_template(value, false)); });
  // Worker sessions come and go...
  for (int i = 0; i < 3; ++i) {
    auto lease = p.acquire();
    lease.discard();
  }
  // ...and the pinned session's object is usable from any worker session.
  const Bytes iv = reference::random_bytes(12);
  const Bytes ciphertext = p.run([&](Session& s) {
    auto gcm = Mechanism::aes_gcm(iv, {});
    return s.encrypt(gcm, session_key, Bytes{1, 2, 3});
  });
  EXPECT_EQ(reference::gcm_decrypt(value, iv, {}, ciphertext), (Bytes{1, 2, 3}));
  EXPECT_EQ(p.session_object_generation(), generation);
}

// Read-only sessions (PoolConfig::read_only, kmsd's default): token keys and session
// objects work in the worker and pinned sessions, token objects cannot be created, changed
// or destroyed. Neither token reports a session limit, so the pool keeps its size.
TEST_P(PoolTest, ReadOnlySessionsUseKeysAndSessionObjectsButNoTokenObjectChanges) {
  hsm::PoolConfig config;
  config.read_only = true;
  auto& p = pool(config);
  EXPECT_TRUE(p.warnings().empty()) << p.warnings().front();
  EXPECT_EQ(p.config().max_sessions, config.max_sessions);
  EXPECT_TRUE(gcm_round_trip(p, key_));
  const Bytes value = reference::random_bytes(32);
  const Bytes iv = reference::random_bytes(12);
  const auto expect_read_only = [](const hsm::Error& error) {
    EXPECT_EQ(error.rv(), static_cast<CK_RV>(CKR_SESSION_READ_ONLY)) << error.what();
  };
  p.run([&](Session& session) {
    EXPECT_EQ(session.state(), static_cast<CK_STATE>(CKS_RO_USER_FUNCTIONS));
    hsm::ObjectGuard object(session, session.create_object(known_key_template(value, false)));
    auto gcm = Mechanism::aes_gcm(iv, {});
    EXPECT_EQ(reference::gcm_decrypt(value, iv, {}, session.encrypt(gcm, object.get(), Bytes{7})),
              Bytes{7});
    const CK_OBJECT_HANDLE token_key = p.resolve(session, key_);
    try {
      create_token_aes_key(session, "read-only-test");
      ADD_FAILURE() << "created a token object in a read-only session";
    } catch (const hsm::Error& error) {
      expect_read_only(error);
    }
    try {
      hsm::AttributeTemplate label;
      label.set_string(CKA_LABEL, "renamed");
      session.set_attributes(token_key, std::move(label));
      ADD_FAILURE() << "changed a token object in a read-only session";
    } catch (const hsm::Error& error) {
      expect_read_only(error);
    }
    try {
      session.destroy(token_key);
      ADD_FAILURE() << "destroyed a token object in a read-only session";
    } catch (const hsm::Error& error) {
      expect_read_only(error);
    }
    return 0;
  });
  // The pinned session too: it holds session objects only.
  const CK_OBJECT_HANDLE pinned_key = p.run_pinned([&](Session& session) {
    EXPECT_EQ(session.state(), static_cast<CK_STATE>(CKS_RO_USER_FUNCTIONS));
    return session.create_object(known_key_template(value, false));
  });
  const Bytes ciphertext = p.run([&](Session& session) {
    auto gcm = Mechanism::aes_gcm(iv, {});
    return session.encrypt(gcm, pinned_key, Bytes{1, 2, 3});
  });
  EXPECT_EQ(reference::gcm_decrypt(value, iv, {}, ciphertext), (Bytes{1, 2, 3}));
  // The default is read/write (kms-provision's pool).
  hsm::SessionPool read_write(module_, slot_, token_->user_pin());
  EXPECT_EQ(read_write.run([](Session& session) { return session.state(); }),
            static_cast<CK_STATE>(CKS_RW_USER_FUNCTIONS));
}

TEST_P(PoolTest, NeverLogsOut) {
  CallCounter calls;
  {
    auto& p = pool();
    EXPECT_TRUE(gcm_round_trip(p, key_));
    pool_.reset();
  }
  EXPECT_EQ(calls["C_Logout"], 0);
  EXPECT_GE(calls["C_CloseSession"], 2);
}

HSM_INSTANTIATE_FOR_TOKENS(PoolTest);

}  // namespace
}  // namespace hsmtest
