// DerivedKeyCache against real tokens: a name derives once and is used again, the LRU bound
// destroys what it evicts (in the token, once no one holds it), concurrent misses of one name
// derive once, and keys lost with their session objects are derived again.
#include "tokens/derived_key_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "hsm/mechanism.h"
#include "token_fixture.h"

namespace {

class DerivedKeyCacheTest : public tokentest::TokenTest {
 protected:
  static constexpr const char* kLabel = "derived-key-cache-test";

  // Stands for a derive: a fresh AES session object on the pinned session, counted.
  tokens::DerivedKeyCache::Derive counted_key() {
    return [this](hsm::Session& pinned) {
      ++derives_;
      return testsupport::generate_session_aes_key(pinned, kLabel);
    };
  }

  static tokens::DerivedKeyCache::Digest name(int i) {
    const std::string context = "context " + std::to_string(i);
    return tokens::DerivedKeyCache::name(
        "media-member",
        hsm::ByteView(reinterpret_cast<const std::uint8_t*>(context.data()), context.size()));
  }

  // The cache's objects in the token.
  std::size_t live_keys() {
    return context_->pool().run([](hsm::Session& session) {
      hsm::AttributeTemplate match;
      match.set_bool(CKA_TOKEN, false).set_string(CKA_LABEL, kLabel);
      return session.find(std::move(match)).size();
    });
  }

  std::atomic<int> derives_{0};
};

TEST_P(DerivedKeyCacheTest, ANameIsDerivedOnceAndUsedAgain) {
  tokens::DerivedKeyCache cache(context_->pool(), 8);
  const auto first = cache.get(name(1), counted_key());
  const auto again = cache.get(name(1), counted_key());
  const auto other = cache.get(name(2), counted_key());
  EXPECT_EQ(derives_.load(), 2);
  EXPECT_EQ(again->handle(), first->handle());
  EXPECT_NE(other->handle(), first->handle());
  const tokens::DerivedKeyCacheStats stats = cache.stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.cached, 2u);
  EXPECT_EQ(live_keys(), 2u);
}

TEST_P(DerivedKeyCacheTest, NamesDependOnLabelAndContext) {
  const std::uint8_t ab[] = {'a', 'b'};
  const std::uint8_t b[] = {'b'};
  EXPECT_NE(tokens::DerivedKeyCache::name("media-chair", ab),
            tokens::DerivedKeyCache::name("media-member", ab));
  // Length-prefixed label: "x" + "ab" is not "xa" + "b".
  EXPECT_NE(tokens::DerivedKeyCache::name("x", ab), tokens::DerivedKeyCache::name("xa", b));
  EXPECT_EQ(tokens::DerivedKeyCache::name("x", ab), tokens::DerivedKeyCache::name("x", ab));
}

TEST_P(DerivedKeyCacheTest, EvictedKeysAreDestroyedOnceReleased) {
  tokens::DerivedKeyCache cache(context_->pool(), 2);
  auto held = cache.get(name(0), counted_key());
  cache.get(name(1), counted_key());
  cache.get(name(2), counted_key());  // evicts name(0), still held
  EXPECT_EQ(live_keys(), 3u);
  held.reset();
  EXPECT_EQ(live_keys(), 2u);
  cache.get(name(0), counted_key());  // derived again
  EXPECT_EQ(derives_.load(), 4);
  EXPECT_EQ(cache.stats().evictions, 2u);
  EXPECT_EQ(live_keys(), 2u);
  cache.clear();
  EXPECT_EQ(live_keys(), 0u);
}

TEST_P(DerivedKeyCacheTest, ConcurrentMissesOfOneNameDeriveOnce) {
  tokens::DerivedKeyCache cache(context_->pool(), 64);
  std::vector<std::thread> threads;
  std::atomic<CK_OBJECT_HANDLE> seen{CK_INVALID_HANDLE};
  std::atomic<int> differing{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int n = 0; n < 50; ++n) {
        const CK_OBJECT_HANDLE handle = cache.get(name(7), counted_key())->handle();
        CK_OBJECT_HANDLE expected = CK_INVALID_HANDLE;
        if (!seen.compare_exchange_strong(expected, handle) && expected != handle) ++differing;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(derives_.load(), 1);
  EXPECT_EQ(differing.load(), 0);
}

TEST_P(DerivedKeyCacheTest, ConcurrentUseOfASmallCacheStaysBounded) {
  tokens::DerivedKeyCache cache(context_->pool(), 3);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; n < 60; ++n) {
        try {
          context_->pool().run([&](hsm::Session& session) {
            const auto key = cache.get(name((n * 7 + t) % 10), counted_key());
            // Used in the worker's session while other threads evict it.
            EXPECT_EQ(session.get_string(key->handle(), CKA_LABEL), kLabel);
            return 0;
          });
        } catch (const std::exception& error) {
          ++failures;
          ADD_FAILURE() << error.what();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(cache.stats().cached, 3u);
  EXPECT_EQ(live_keys(), cache.stats().cached) << "every evicted key destroyed";
}

// Session objects die with the session that created them (here all sessions closed behind
// the pool's back): the next get() after the recovery derives again and hands out a live key.
TEST_P(DerivedKeyCacheTest, KeysLostWithTheirSessionAreDerivedAgain) {
  tokens::DerivedKeyCache cache(context_->pool(), 8);
  // As the services use it: inside run(), which recovers and runs the operation again.
  const auto use = [&] {
    return context_->pool().run([&](hsm::Session& session) {
      const auto key = cache.get(name(3), counted_key());
      EXPECT_EQ(session.get_string(key->handle(), CKA_LABEL), kLabel);
      return key->current();
    });
  };
  EXPECT_TRUE(use());
  const auto generation = context_->pool().session_object_generation();
  context_->module()->functions()->C_CloseAllSessions(context_->pool().slot());
  EXPECT_TRUE(use());
  EXPECT_NE(context_->pool().session_object_generation(), generation);
  EXPECT_EQ(derives_.load(), 2);
  EXPECT_EQ(cache.stats().cached, 1u);
  EXPECT_EQ(live_keys(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Tokens, DerivedKeyCacheTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         tokentest::kind_param_name);

}  // namespace
