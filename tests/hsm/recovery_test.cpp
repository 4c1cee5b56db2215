// Recovery without restarting the process: sessions closed behind the pool's back, stale
// object handles, a lost login (real tokens), and, through the fault module, a device error,
// a token that disappears and comes back, and injected session/handle/login errors.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fault_control.h"
#include "pool_helpers.h"
#include "token_fixture.h"

namespace hsmtest {
namespace {

using hsm::Bytes;
using hsm::Session;

const hsm::KeyRef kKey{"recovery-key", {}, CKO_SECRET_KEY};

// ---- real tokens, faults produced through the PKCS#11 API itself

class RecoveryTest : public TokenTest {
 protected:
  void SetUp() override {
    TokenTest::SetUp();
    admin_ = std::make_unique<Session>(module_, slot_);
    admin_->login(CKU_USER, token_->user_pin());
    key_handle_ = create_token_aes_key(*admin_, kKey.label);
  }
  void TearDown() override {
    admin_.reset();
    TokenTest::TearDown();
  }
  std::unique_ptr<Session> admin_;  // "another part of the process" using the token
  CK_OBJECT_HANDLE key_handle_ = CK_INVALID_HANDLE;
};

TEST_P(RecoveryTest, SessionsClosedBehindThePoolsBackAreReplacedOnAcquire) {
  auto& p = pool();
  ASSERT_TRUE(gcm_round_trip(p, kKey));
  const auto generation = p.session_object_generation();
  // The module's function list is shared in-process: close every session of the slot.
  ASSERT_EQ(module_->functions()->C_CloseAllSessions(slot_), CKR_OK);
  EXPECT_FALSE(p.ready());

  EXPECT_TRUE(gcm_round_trip(p, kKey));
  const auto stats = p.stats();
  EXPECT_GE(stats.sessions_replaced, 2u);  // the idle worker and the pinned session
  EXPECT_EQ(stats.reinitializations, 0u);
  EXPECT_NE(p.session_object_generation(), generation);  // session objects died with them
  EXPECT_TRUE(p.ready());
}

TEST_P(RecoveryTest, SessionsClosedBehindThePoolsBackAreReplacedAfterAFailedCall) {
  hsm::PoolConfig config;
  config.validate_on_acquire = false;  // the operation itself meets the dead session
  auto& p = pool(config);
  ASSERT_TRUE(gcm_round_trip(p, kKey));
  ASSERT_EQ(module_->functions()->C_CloseAllSessions(slot_), CKR_OK);
  int attempts = 0;
  const bool ok = p.run([&](Session& s) {
    ++attempts;
    const CK_OBJECT_HANDLE key = p.resolve(s, kKey);
    return s.get_ulong(key, CKA_KEY_TYPE) == CKK_AES;
  });
  EXPECT_TRUE(ok);
  EXPECT_EQ(attempts, 2);
  EXPECT_GE(p.stats().sessions_replaced, 1u);
  EXPECT_TRUE(p.ready());
}

TEST_P(RecoveryTest, StaleHandleIsReFoundByLabel) {
  auto& p = pool();
  ASSERT_TRUE(gcm_round_trip(p, kKey));  // caches the handle
  // Replace the key by another with the same label; a filler object makes sure the new key
  // does not get the old handle number back.
  admin_->destroy(key_handle_);
  create_token_aes_key(*admin_, "filler");
  create_token_aes_key(*admin_, kKey.label);

  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_EQ(p.stats().handles_refound, 1u);
}

TEST_P(RecoveryTest, LostLoginIsRestored) {
  auto& p = pool();
  ASSERT_TRUE(gcm_round_trip(p, kKey));
  const auto generation = p.session_object_generation();
  // Login state is per application: a logout anywhere logs every session out.
  ASSERT_EQ(module_->functions()->C_Logout(admin_->handle()), CKR_OK);
  EXPECT_FALSE(p.ready());

  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_GE(p.stats().relogins, 1u);
  EXPECT_NE(p.session_object_generation(), generation);  // SoftHSM dropped session objects
  EXPECT_TRUE(p.ready());
}

HSM_INSTANTIATE_FOR_TOKENS(RecoveryTest);

// ---- the fault module in front of the real token

class FaultTest : public ::testing::TestWithParam<testsupport::TokenKind> {
 protected:
  void SetUp() override {
    token_ = testsupport::TestToken::create(GetParam());
    record_dir_ = std::make_unique<testsupport::TempDir>("kms-record");
    setenv("KMS_FAULT_TARGET", token_->module_path().c_str(), 1);
    setenv("KMS_PKCS11_RECORD", record_file().c_str(), 1);
    hsm::ModuleConfig config = token_->module_config();
    config.module = KMS_FAULT_MODULE_PATH;
    module_ = hsm::Module::load(config);
    unsetenv("KMS_PKCS11_RECORD");
    faults_ = std::make_unique<FaultControl>(KMS_FAULT_MODULE_PATH);
    slot_ = hsm::TokenUri::parse(token_->uri()).select(*module_).slot;
    Session setup(module_, slot_);
    setup.login(CKU_USER, token_->user_pin());
    create_token_aes_key(setup, kKey.label);
  }
  void TearDown() override {
    if (faults_) faults_->clear();
    pool_.reset();
    faults_.reset();
    module_.reset();
    token_.reset();
  }
  hsm::SessionPool& pool(hsm::PoolConfig config = {}) {
    if (!pool_) {
      pool_ = std::make_unique<hsm::SessionPool>(module_, slot_, token_->user_pin(), config);
    }
    return *pool_;
  }
  // The pool after one successful round trip: sessions open, logged in, key handle cached.
  hsm::SessionPool& warm_pool(hsm::PoolConfig config = {}) {
    auto& p = pool(config);
    if (!gcm_round_trip(p, kKey)) throw std::runtime_error("round trip failed before any fault");
    return p;
  }
  std::string record_file() const { return record_dir_->path() + "/calls.log"; }

  std::unique_ptr<testsupport::TestToken> token_;
  std::unique_ptr<testsupport::TempDir> record_dir_;
  std::shared_ptr<hsm::Module> module_;
  std::unique_ptr<FaultControl> faults_;
  CK_SLOT_ID slot_ = 0;
  std::unique_ptr<hsm::SessionPool> pool_;
};

TEST_P(FaultTest, DeviceErrorIsRecoveredByReinitialisingTheModule) {
  auto& p = warm_pool();
  const auto generation = p.session_object_generation();
  const auto initializations = faults_->call_count("C_Initialize");
  std::vector<std::string> seen;
  p.on_recovery([&](const hsm::Error& error) { seen.push_back(hsm::rv_name(error.rv())); });

  faults_->fail_until_reinitialized(CKR_DEVICE_ERROR);
  EXPECT_TRUE(gcm_round_trip(p, kKey));

  EXPECT_EQ(faults_->call_count("C_Initialize"), initializations + 1);
  EXPECT_GE(faults_->call_count("C_Finalize"), 1u);
  const auto stats = p.stats();
  EXPECT_EQ(stats.reinitializations, 1u);
  EXPECT_NE(p.session_object_generation(), generation);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), "CKR_DEVICE_ERROR");
  EXPECT_TRUE(p.ready());
  // And it keeps working.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_EQ(p.stats().reinitializations, 1u);
}

TEST_P(FaultTest, TokenThatDisappearsAndComesBackIsUsedAgain) {
  auto& p = warm_pool();
  faults_->set_token_present(false);
  try {
    gcm_round_trip(p, kKey);
    FAIL() << "an operation succeeded without a token";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), CKR_TOKEN_NOT_PRESENT);
  }
  EXPECT_FALSE(p.ready());

  faults_->set_token_present(true);
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_TRUE(p.ready());
  EXPECT_GE(p.stats().reinitializations, 1u);
}

TEST_P(FaultTest, InjectedSessionHandleInvalidReplacesTheSession) {
  auto& p = warm_pool();
  const auto calls = faults_->call_count("C_EncryptInit");
  faults_->fail_next("C_EncryptInit", CKR_SESSION_HANDLE_INVALID);
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  const auto stats = p.stats();
  EXPECT_GE(stats.sessions_replaced, 1u);
  EXPECT_EQ(stats.reinitializations, 0u);
  EXPECT_EQ(faults_->call_count("C_EncryptInit"), calls + 2);  // failed, then ok
}

TEST_P(FaultTest, InjectedKeyHandleInvalidReFindsTheKey) {
  auto& p = warm_pool();
  const auto finds = faults_->call_count("C_FindObjectsInit");
  faults_->fail_next("C_EncryptInit", CKR_KEY_HANDLE_INVALID);
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_EQ(p.stats().handles_refound, 1u);
  EXPECT_EQ(faults_->call_count("C_FindObjectsInit"), finds + 1);
}

TEST_P(FaultTest, InjectedUserNotLoggedInLogsInAgain) {
  auto& p = warm_pool();
  const auto logins = faults_->call_count("C_Login");
  faults_->fail_next("C_DecryptInit", CKR_USER_NOT_LOGGED_IN);
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_EQ(p.stats().relogins, 1u);
  EXPECT_EQ(faults_->call_count("C_Login"), logins + 1);
}

TEST_P(FaultTest, UnrecoverableErrorsAreNotRetried) {
  auto& p = warm_pool();
  const auto calls = faults_->call_count("C_Decrypt");
  faults_->fail_next("C_Decrypt", CKR_ENCRYPTED_DATA_INVALID);
  EXPECT_THROW(gcm_round_trip(p, kKey), hsm::Error);
  EXPECT_EQ(faults_->call_count("C_Decrypt"), calls + 1);
}

TEST_P(FaultTest, PersistentFaultGivesUpAfterMaxRetries) {
  hsm::PoolConfig config;
  config.max_retries = 2;
  auto& p = warm_pool(config);
  const auto calls = faults_->call_count("C_EncryptInit");
  faults_->fail_next("C_EncryptInit", CKR_SESSION_HANDLE_INVALID, 100);
  try {
    gcm_round_trip(p, kKey);
    FAIL() << "succeeded through a persistent fault";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), CKR_SESSION_HANDLE_INVALID);
  }
  EXPECT_EQ(faults_->call_count("C_EncryptInit"), calls + 3);  // one run + 2 retries
}

TEST_P(FaultTest, ConcurrentOperationsSurviveADeviceErrorWithOneReinitialisation) {
  hsm::PoolConfig config;
  config.max_sessions = 4;
  config.max_retries = 3;
  auto& p = pool(config);
  constexpr int kThreads = 4, kOperations = 25, kBeforeFault = 5;
  std::atomic<int> good{0}, warmed_up{0};
  std::atomic<bool> fault_armed{false};
  std::mutex errors_mutex;
  std::vector<std::string> errors;  // every failure, printed: a count alone hides the race
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kOperations; ++i) {
        if (i == kBeforeFault) {  // every thread still has work when the device breaks
          ++warmed_up;
          while (!fault_armed.load()) std::this_thread::yield();
        }
        try {
          good += gcm_round_trip(p, kKey) ? 1 : 0;
        } catch (const hsm::Error& error) {
          std::lock_guard lock(errors_mutex);
          errors.emplace_back(error.what());
        }
      }
    });
  }
  while (warmed_up.load() < kThreads) std::this_thread::yield();
  faults_->fail_until_reinitialized(CKR_DEVICE_ERROR);
  fault_armed = true;
  for (auto& thread : threads) thread.join();
  std::string listed;
  for (const auto& error : errors) listed += "\n  " + error;
  EXPECT_TRUE(errors.empty()) << errors.size() << " operations failed:" << listed;
  EXPECT_EQ(good.load(), kThreads * kOperations);
  const auto stats = p.stats();
  EXPECT_EQ(stats.reinitializations, 1u);
  EXPECT_EQ(stats.in_use, 0u);
  EXPECT_LE(stats.open_sessions, config.max_sessions + 1);
  EXPECT_TRUE(p.ready());
}

// A token that stays gone must not be re-initialised by every failing operation (a network
// HSM would suffer): one attempt opens the breaker, the rest fail fast, one log-worthy
// state change each way, and the token is used again as soon as it is back.
TEST_P(FaultTest, TokenThatStaysGoneIsNotReinitialisedByEveryOperation) {
  hsm::PoolConfig config;
  config.reinit_backoff_min = std::chrono::hours(1);  // no second attempt within the test
  config.reinit_backoff_max = std::chrono::hours(1);
  auto& p = warm_pool(config);
  std::vector<std::string> changes;
  p.on_health_change([&](bool up, const std::string&) { changes.push_back(up ? "up" : "down"); });
  faults_->set_token_present(false);
  for (int i = 0; i < 50; ++i) EXPECT_THROW(gcm_round_trip(p, kKey), hsm::Error);
  auto stats = p.stats();
  EXPECT_EQ(stats.reinitializations, 1u);
  EXPECT_EQ(stats.reinit_failures, 1u);
  EXPECT_GE(stats.reinit_suppressed, 49u);
  EXPECT_TRUE(stats.token_down);
  EXPECT_EQ(changes, std::vector<std::string>{"down"});

  faults_->set_token_present(true);
  EXPECT_TRUE(gcm_round_trip(p, kKey));  // the session reopen finds it: no backoff wait
  stats = p.stats();
  EXPECT_FALSE(stats.token_down);
  EXPECT_EQ(stats.reinitializations, 1u);
  EXPECT_EQ(changes, (std::vector<std::string>{"down", "up"}));
  EXPECT_TRUE(p.ready());
}

// After the backoff a device that needs a re-initialisation gets one (half-open breaker).
TEST_P(FaultTest, BrokenDeviceIsReinitialisedAgainAfterTheBackoff) {
  hsm::PoolConfig config;
  config.reinit_backoff_min = std::chrono::milliseconds(0);
  auto& p = warm_pool(config);
  faults_->set_token_present(false);
  EXPECT_THROW(gcm_round_trip(p, kKey), hsm::Error);
  EXPECT_TRUE(p.stats().token_down);
  faults_->set_token_present(true);
  faults_->fail_until_reinitialized(CKR_DEVICE_ERROR);  // back, but broken until C_Initialize
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_FALSE(p.stats().token_down);
  EXPECT_GE(p.stats().reinitializations, 2u);
}

// Readiness heals with no traffic: probe() repairs what ready() only reports.
TEST_P(FaultTest, ProbeBringsReadinessBackWithoutTraffic) {
  auto& p = warm_pool();
  faults_->set_token_present(false);
  EXPECT_FALSE(p.probe());
  EXPECT_FALSE(p.ready());
  faults_->set_token_present(true);
  EXPECT_FALSE(p.ready());  // nothing repaired it yet
  EXPECT_TRUE(p.probe());
  EXPECT_TRUE(p.ready());
}

TEST_P(FaultTest, DelayedCallsAreSlowAndStillSucceedUntilTheDelayIsRemoved) {
  auto& p = warm_pool();
  constexpr std::chrono::milliseconds kDelay{300};
  faults_->delay("C_Decrypt", static_cast<unsigned>(kDelay.count()));
  const auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_GE(std::chrono::steady_clock::now() - started, kDelay);
  faults_->delay("C_Decrypt", 0);
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  const auto stats = p.stats();  // slow, not broken: nothing was recovered
  EXPECT_EQ(stats.sessions_replaced, 0u);
  EXPECT_EQ(stats.reinitializations, 0u);
}

TEST_P(FaultTest, RecordsEveryCallWithMechanismsAndAttributeTypes) {
  auto& p = warm_pool();
  std::ifstream in(record_file());
  std::stringstream text;
  text << in.rdbuf();
  const std::string log = text.str();
  EXPECT_NE(log.find("C_Initialize rv=0x0\n"), std::string::npos) << log;
  EXPECT_NE(log.find("C_EncryptInit mech=0x1087 rv=0x0\n"), std::string::npos) << log;
  EXPECT_NE(log.find("C_DecryptInit mech=0x1087 rv=0x0\n"), std::string::npos) << log;
  EXPECT_NE(log.find("C_GenerateKey mech=0x1080 attrs=0x0,0x100,0x161,0x1,0x2,0x103,0x162,"
                     "0x104,0x105,0x3 rv=0x0\n"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("C_FindObjectsInit attrs=0x0,0x1,0x3 rv=0x0\n"), std::string::npos) << log;
  EXPECT_EQ(log.find("C_Login mech"), std::string::npos);
  EXPECT_EQ(log.find(token_->user_pin().value()), std::string::npos);  // never the PIN
  // Reading a sensitive value is recorded with its attribute type and the refusal.
  Session s(module_, slot_);
  s.login(CKU_USER, token_->user_pin());
  const CK_OBJECT_HANDLE key = p.run([&](Session& session) { return p.resolve(session, kKey); });
  EXPECT_THROW(s.get_bytes(key, CKA_VALUE), hsm::Error);
  std::ifstream again(record_file());
  std::stringstream more;
  more << again.rdbuf();
  EXPECT_NE(more.str().find("C_GetAttributeValue attrs=0x11 rv=0x11\n"), std::string::npos);
}

// ---- the token's session limit (CK_TOKEN_INFO.ulMaxSessionCount, CKR_SESSION_COUNT)

// Waits (up to 30 s) for a condition another thread makes true.
template <class Condition>
bool eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A token that allows 3 sessions: the pool keeps 2 workers (plus the pinned session), says
// so, and under more concurrent operations than that never asks the token for a 4th.
TEST_P(FaultTest, PoolIsCappedToTheTokensSessionLimit) {
  faults_->limit_sessions(3);
  const auto opens_before = faults_->call_count("C_OpenSession");
  hsm::PoolConfig config;
  config.max_sessions = 8;
  config.acquire_timeout = std::chrono::seconds(30);
  auto& p = pool(config);
  EXPECT_EQ(p.config().max_sessions, 2u);
  ASSERT_EQ(p.warnings().size(), 1u);
  EXPECT_EQ(p.warnings().front(),
            "the token allows 3 sessions (ulMaxSessionCount): max_sessions lowered from 8 to 2, "
            "plus the pinned session");
  constexpr int kThreads = 6, kOperations = 5;
  std::atomic<int> good{0};
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kOperations; ++i) {
        try {
          if (gcm_round_trip(p, kKey)) ++good;
        } catch (const std::exception& error) {
          std::lock_guard lock(errors_mutex);
          errors.push_back(error.what());
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), kThreads * kOperations) << (errors.empty() ? "" : errors.front());
  const auto stats = p.stats();
  EXPECT_EQ(stats.session_count_refusals, 0u);  // it never went beyond the limit
  EXPECT_LE(stats.open_sessions, 3u);
  EXPECT_EQ(faults_->call_count("C_OpenSession") - opens_before, stats.sessions_opened);
}

// CKR_SESSION_COUNT at C_OpenSession is a busy pool, not a device fault: the operation
// waits until a session is given back, and nothing is recovered or re-initialised.
TEST_P(FaultTest, SessionCountAtOpenWaitsForASessionToBeGivenBack) {
  hsm::PoolConfig config;
  config.max_sessions = 2;
  config.acquire_timeout = std::chrono::seconds(30);
  auto& p = warm_pool(config);  // the pinned session and one idle worker
  std::optional<hsm::SessionPool::Lease> held(p.acquire());
  faults_->fail_next("C_OpenSession", CKR_SESSION_COUNT, 1 << 20);
  std::atomic<bool> done{false};
  bool ok = false;
  std::string failure;
  std::thread waiter([&] {
    try {
      ok = gcm_round_trip(p, kKey);
    } catch (const std::exception& error) {
      failure = error.what();
    }
    done = true;
  });
  EXPECT_TRUE(eventually([&] { return p.stats().session_count_refusals >= 1; }));
  EXPECT_FALSE(done.load()) << failure;  // still waiting, not failed
  held.reset();                          // the give-back serves the waiter
  waiter.join();
  faults_->clear();
  EXPECT_TRUE(ok) << failure;
  const auto stats = p.stats();
  EXPECT_EQ(stats.acquire_timeouts, 0u);
  EXPECT_EQ(stats.reinitializations, 0u);
  EXPECT_EQ(stats.sessions_replaced, 0u);
  EXPECT_FALSE(stats.token_down);
  EXPECT_TRUE(p.ready());
}

// The sessions the token counts may be other applications': C_OpenSession is tried again
// while waiting, and a session the token accepts later is used.
TEST_P(FaultTest, SessionCountIsRetriedUntilTheTokenAcceptsASession) {
  hsm::PoolConfig config;
  config.max_sessions = 2;
  config.acquire_timeout = std::chrono::seconds(30);
  auto& p = warm_pool(config);
  std::optional<hsm::SessionPool::Lease> held(p.acquire());  // nothing will be given back
  const auto opened = p.stats().sessions_opened;
  faults_->fail_next("C_OpenSession", CKR_SESSION_COUNT, 3);
  EXPECT_NO_THROW(p.acquire());
  const auto stats = p.stats();
  EXPECT_EQ(stats.session_count_refusals, 3u);
  EXPECT_EQ(stats.sessions_opened, opened + 1);
  EXPECT_EQ(stats.reinitializations, 0u);
}

// A token that keeps refusing sessions while the pool has none to give back: after the
// acquire timeout, ErrorKind::pool_exhausted (503 overloaded in kmsd), never a PKCS#11
// error that would trigger device recovery.
TEST_P(FaultTest, SessionCountThatNeverClearsIsPoolExhaustion) {
  hsm::PoolConfig config;
  config.max_sessions = 2;
  config.acquire_timeout = std::chrono::milliseconds(300);
  auto& p = warm_pool(config);
  std::optional<hsm::SessionPool::Lease> held(p.acquire());
  faults_->fail_next("C_OpenSession", CKR_SESSION_COUNT, 1 << 20);
  try {
    p.acquire();
    FAIL() << "acquired a session the token refused";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.kind(), hsm::ErrorKind::pool_exhausted) << error.what();
    EXPECT_FALSE(error.recoverable());
    EXPECT_NE(std::string(error.what()).find("CKR_SESSION_COUNT"), std::string::npos)
        << error.what();
  }
  faults_->clear();
  auto stats = p.stats();
  EXPECT_EQ(stats.acquire_timeouts, 1u);
  EXPECT_GE(stats.session_count_refusals, 1u);
  EXPECT_EQ(stats.reinitializations, 0u);
  EXPECT_FALSE(stats.token_down);
  held.reset();
  EXPECT_TRUE(gcm_round_trip(p, kKey));
  EXPECT_EQ(p.stats().open_sessions, 2u);  // the reservation was given up
}

INSTANTIATE_TEST_SUITE_P(Tokens, FaultTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_name);

}  // namespace
}  // namespace hsmtest
