// KeyStore against real tokens: identity -> usable key, refusals without token calls, the
// LRU cache of unwrapped session objects, rotation, token mode, lost session objects.
#include "tokens/key_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "hsm/error.h"
#include "hsm/instrumentation.h"
#include "key_proof.h"
#include "software_kdf.h"
#include "token_fixture.h"
#include "tokens/kdf.h"

namespace {

using testkdf::Bytes;
using tokens::IdentityKind;

class KeyStoreTest : public tokentest::TokenTest {
 protected:
  void SetUp() override {
    TokenTest::SetUp();
    tokentest::create_kms_keys(*context_);
    database_ = std::make_unique<tokens::KeyDatabase>(config_.database);
  }
  void TearDown() override {
    database_.reset();
    TokenTest::TearDown();
  }

  // Stores a root key of known value, as kms-provision would (wrapped or token mode).
  Bytes provision(IdentityKind kind, const std::string& identity, tokens::KeyStoreMode mode,
                  std::uint32_t version = 1) {
    const Bytes value = testkdf::random_bytes(32);
    const Bytes wrapped = context_->pool().run([&](hsm::Session& session) {
      hsm::AttributeTemplate t = tokens::templates::root_key_in_transit(context_->profile());
      t.set_bytes(CKA_VALUE, value);
      hsm::ObjectGuard in_transit(session, session.create_object(std::move(t)));
      const CK_OBJECT_HANDLE storage = context_->pool().resolve(session, tokens::storage_key_ref());
      hsm::Mechanism wrap(context_->profile().wrap_mechanism);
      Bytes blob = session.wrap_key(wrap, storage, in_transit.get());
      if (mode == tokens::KeyStoreMode::token) {
        hsm::Mechanism unwrap(context_->profile().wrap_mechanism);
        session.unwrap_key(
            unwrap, storage, blob,
            tokens::templates::root_key(context_->profile(), kind, identity, version, true));
        blob.clear();
      }
      return blob;
    });
    tokens::IdentityRecord record;
    record.identity = identity;
    record.kind = kind;
    record.mode = mode;
    record.key_version = version;
    record.wrapped_key = wrapped;
    if (database_->find(kind, identity)) {
      database_->replace_key(kind, identity, version, mode, wrapped);
    } else {
      database_->insert(record);
    }
    return value;
  }

  void expect_is(const tokens::ResolvedKey& key, const Bytes& value) {
    EXPECT_TRUE(testkdf::key_holds(*context_, key.handle(), value));
  }

  // The session objects of identities: not the store's copy of the storage key (which
  // keeps the label kms/storage; storage_key_copies() counts it).
  std::size_t session_objects() { return session_keys(false); }
  std::size_t storage_key_copies() { return session_keys(true); }
  std::size_t session_keys(bool storage_copies) {
    const std::string storage_label = tokens::storage_key_ref().label;
    return context_->pool().run([&](hsm::Session& session) {
      hsm::AttributeTemplate match;
      match.set_ulong(CKA_CLASS, CKO_SECRET_KEY).set_bool(CKA_TOKEN, false);
      std::size_t count = 0;
      for (CK_OBJECT_HANDLE handle : session.find(std::move(match), 100000)) {
        count += (session.get_string(handle, CKA_LABEL) == storage_label) == storage_copies;
      }
      return count;
    });
  }

  // The store keeps one child per subscriber: KDF(root, "one", identity).
  void keep_one_child(tokens::KeyStore& store) {
    const tokens::TokenProfile& profile = context_->profile();
    store.keep_children(IdentityKind::subscriber, [&profile](hsm::Session& session,
                                                             CK_OBJECT_HANDLE root,
                                                             std::string_view identity) {
      hsm::ObjectGuard child(session, tokens::derive(session, profile, root, testkdf::label("one"),
                                                     testkdf::to_bytes(std::string(identity)),
                                                     tokens::templates::response_key()));
      return std::vector<CK_OBJECT_HANDLE>{child.release()};
    });
  }

  std::unique_ptr<tokens::KeyDatabase> database_;
};

TEST_P(KeyStoreTest, WrappedModeResolvesToTheStoredKey) {
  const Bytes alice = provision(IdentityKind::subscriber, "sip:alice@ims.example.net",
                                tokens::KeyStoreMode::wrapped);
  const Bytes bridge =
      provision(IdentityKind::bridge, "sip:bridge@ims.example.net", tokens::KeyStoreMode::wrapped);
  tokens::KeyStore store(*context_, *database_, 16);
  const auto key = store.resolve(IdentityKind::subscriber, "sip:alice@ims.example.net");
  EXPECT_EQ(key.key_version, 1u);
  expect_is(key, alice);
  EXPECT_FALSE(testkdf::key_holds(*context_, key.handle(), bridge));  // the proof can fail
  expect_is(store.resolve(IdentityKind::bridge, "sip:bridge@ims.example.net"), bridge);
  // A subscriber is not a bridge.
  EXPECT_THROW(store.resolve(IdentityKind::bridge, "sip:alice@ims.example.net"),
               tokens::LookupError);
  // The unwrapped copy is a session object, not extractable, derive only, and public like
  // the working keys (CKA_PRIVATE restricts nobody on kmsd's own sessions).
  context_->pool().run([&](hsm::Session& session) {
    EXPECT_FALSE(session.get_bool(key.handle(), CKA_TOKEN));
    EXPECT_FALSE(session.get_bool(key.handle(), CKA_PRIVATE));
    EXPECT_FALSE(session.get_bool(key.handle(), CKA_EXTRACTABLE));
    EXPECT_TRUE(session.get_bool(key.handle(), CKA_SENSITIVE));
    EXPECT_TRUE(session.get_bool(key.handle(), CKA_DERIVE));
    EXPECT_FALSE(session.get_bool(key.handle(), CKA_DECRYPT));
    return 0;
  });
  // Second resolve: cache hit, same object.
  EXPECT_EQ(store.resolve(IdentityKind::subscriber, "sip:alice@ims.example.net").handle(),
            key.handle());
  EXPECT_EQ(store.stats().hits, 1u);
}

TEST_P(KeyStoreTest, UnknownAndRevokedNeverReachTheToken) {
  provision(IdentityKind::subscriber, "sip:bob@ims.example.net", tokens::KeyStoreMode::wrapped);
  database_->set_status(IdentityKind::subscriber, "sip:bob@ims.example.net",
                        tokens::KeyStatus::revoked);
  tokens::KeyStore store(*context_, *database_, 16);
  std::atomic<int> calls{0};
  hsm::set_call_observer([&](const char*, CK_RV, std::chrono::nanoseconds) { ++calls; });
  try {
    store.resolve(IdentityKind::subscriber, "sip:nobody@ims.example.net");
    ADD_FAILURE() << "unknown identity resolved";
  } catch (const tokens::LookupError& error) {
    EXPECT_EQ(error.reason(), tokens::LookupError::Reason::unknown);
  }
  try {
    store.resolve(IdentityKind::subscriber, "sip:bob@ims.example.net");
    ADD_FAILURE() << "revoked identity resolved";
  } catch (const tokens::LookupError& error) {
    EXPECT_EQ(error.reason(), tokens::LookupError::Reason::revoked);
  }
  hsm::set_call_observer({});
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(store.stats().refused, 2u);
}

TEST_P(KeyStoreTest, RevocationTakesEffectOnACachedKey) {
  provision(IdentityKind::subscriber, "sip:carol@ims.example.net", tokens::KeyStoreMode::wrapped);
  tokens::KeyStore store(*context_, *database_, 16);
  store.resolve(IdentityKind::subscriber, "sip:carol@ims.example.net");
  EXPECT_EQ(store.stats().cached, 1u);
  database_->set_status(IdentityKind::subscriber, "sip:carol@ims.example.net",
                        tokens::KeyStatus::revoked);
  EXPECT_THROW(store.resolve(IdentityKind::subscriber, "sip:carol@ims.example.net"),
               tokens::LookupError);
  EXPECT_EQ(store.stats().cached, 0u);  // the unwrapped copy is gone too
}

TEST_P(KeyStoreTest, RotationResolvesTheNewVersion) {
  provision(IdentityKind::subscriber, "sip:dave@ims.example.net", tokens::KeyStoreMode::wrapped);
  tokens::KeyStore store(*context_, *database_, 16);
  store.resolve(IdentityKind::subscriber, "sip:dave@ims.example.net");
  const Bytes v2 = provision(IdentityKind::subscriber, "sip:dave@ims.example.net",
                             tokens::KeyStoreMode::wrapped, 2);
  const auto key = store.resolve(IdentityKind::subscriber, "sip:dave@ims.example.net");
  EXPECT_EQ(key.key_version, 2u);
  expect_is(key, v2);
}

TEST_P(KeyStoreTest, EvictionKeepsKeysInUseAndDestroysTheRest) {
  const std::size_t before = session_objects();
  std::vector<Bytes> values;
  for (int i = 0; i < 6; ++i) {
    values.push_back(provision(IdentityKind::subscriber,
                               "sip:user" + std::to_string(i) + "@ims.example.net",
                               tokens::KeyStoreMode::wrapped));
  }
  tokens::KeyStore store(*context_, *database_, 2);
  std::optional<tokens::ResolvedKey> held =
      store.resolve(IdentityKind::subscriber, "sip:user0@ims.example.net");
  for (int i = 1; i < 6; ++i) {
    store.resolve(IdentityKind::subscriber, "sip:user" + std::to_string(i) + "@ims.example.net");
  }
  EXPECT_EQ(store.stats().cached, 2u);
  EXPECT_GE(store.stats().evictions, 4u);
  expect_is(*held, values[0]);               // evicted from the cache, still usable while held
  EXPECT_EQ(session_objects(), before + 3);  // two cached + the one held
  store.clear();
  EXPECT_EQ(session_objects(), before + 1);  // only the held one is left
  held.reset();
  EXPECT_EQ(session_objects(), before);  // destroyed on last release
}

// The bound with child keys, as kmsd keeps them (two per subscriber, the root key destroyed
// at once): cycling twice through more subscribers than fit, the cache never holds more
// than its bound, the token holds exactly the cached entries' children (an evicted entry's
// are destroyed), and every evicted subscriber is resolved again to working keys.
TEST_P(KeyStoreTest, EvictedChildKeysAreDestroyedAndResolvedAgain) {
  constexpr std::size_t kBound = 3;
  constexpr int kSubscribers = 8;
  const std::size_t before = session_objects();
  std::vector<Bytes> values;
  const auto id = [](int i) { return "sip:evict" + std::to_string(i) + "@ims.example.net"; };
  for (int i = 0; i < kSubscribers; ++i) {
    values.push_back(provision(IdentityKind::subscriber, id(i), tokens::KeyStoreMode::wrapped));
  }
  tokens::KeyStore store(*context_, *database_, kBound);
  const tokens::TokenProfile& profile = context_->profile();
  store.keep_children(IdentityKind::subscriber, [&profile](hsm::Session& session,
                                                           CK_OBJECT_HANDLE root,
                                                           std::string_view identity) {
    const Bytes context = testkdf::to_bytes(std::string(identity));
    hsm::ObjectGuard first(session, tokens::derive(session, profile, root, testkdf::label("one"),
                                                   context, tokens::templates::response_key()));
    hsm::ObjectGuard second(session, tokens::derive(session, profile, root, testkdf::label("two"),
                                                    context, tokens::templates::response_key()));
    return std::vector<CK_OBJECT_HANDLE>{first.release(), second.release()};
  });
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kSubscribers; ++i) {
      const auto key = store.resolve(IdentityKind::subscriber, id(i));
      const Bytes context = testkdf::to_bytes(id(i));
      const Bytes& root = values[static_cast<std::size_t>(i)];
      ASSERT_EQ(key.key->child_count(), 2u);
      EXPECT_TRUE(testkdf::key_holds(
          *context_, key.child(0), testkdf::kdf(profile.id, root, testkdf::label("one"), context)))
          << id(i) << " round " << round;
      EXPECT_TRUE(testkdf::key_holds(
          *context_, key.child(1), testkdf::kdf(profile.id, root, testkdf::label("two"), context)))
          << id(i) << " round " << round;
      const std::size_t cached = store.stats().cached;
      EXPECT_LE(cached, kBound);
      EXPECT_EQ(session_objects(), before + 2 * cached) << id(i) << " round " << round;
    }
  }
  const tokens::KeyStoreStats stats = store.stats();
  EXPECT_EQ(stats.misses, 2u * kSubscribers);  // every one resolved again in round 2
  EXPECT_EQ(stats.hits, 0u);
  EXPECT_EQ(stats.evictions, 2u * kSubscribers - kBound);
  store.clear();
  EXPECT_EQ(session_objects(), before);
}

// Unwraps on a miss use a session-object copy of the storage key where the token permits
// (NSS softoken; a token-object use there decrypts its value under the database password):
// one copy, made at the first miss, kept across misses, destroyed with the store. SoftHSM
// refuses the copy (CKA_COPYABLE=FALSE): the token object, and no copy.
TEST_P(KeyStoreTest, MissesUnwrapUnderOneCopyOfTheStorageKeyWhereTheTokenAllows) {
  const bool copies = GetParam() == testsupport::TokenKind::nss;
  std::vector<Bytes> values;
  const auto id = [](int i) { return "sip:copy" + std::to_string(i) + "@ims.example.net"; };
  for (int i = 0; i < 4; ++i) {
    values.push_back(provision(IdentityKind::subscriber, id(i), tokens::KeyStoreMode::wrapped));
  }
  {
    tokens::KeyStore store(*context_, *database_, 2);
    EXPECT_EQ(storage_key_copies(), 0u);
    for (int i = 0; i < 4; ++i) {
      expect_is(store.resolve(IdentityKind::subscriber, id(i)), values[std::size_t(i)]);
      EXPECT_EQ(storage_key_copies(), copies ? 1u : 0u) << id(i);
    }
    EXPECT_EQ(store.stats().misses, 4u);
    EXPECT_EQ(store.stats().storage_copy, copies);
  }
  EXPECT_EQ(storage_key_copies(), 0u);  // destroyed with the store
}

TEST_P(KeyStoreTest, TokenModeFindsTheTokenObject) {
  const Bytes erin =
      provision(IdentityKind::subscriber, "sip:erin@ims.example.net", tokens::KeyStoreMode::token);
  tokens::KeyStore store(*context_, *database_, 4);
  const auto key = store.resolve(IdentityKind::subscriber, "sip:erin@ims.example.net");
  expect_is(key, erin);
  context_->pool().run([&](hsm::Session& session) {
    EXPECT_TRUE(session.get_bool(key.handle(), CKA_TOKEN));
    EXPECT_TRUE(session.get_bool(key.handle(), CKA_PRIVATE));  // a long-term key stays private
    EXPECT_FALSE(session.get_bool(key.handle(), CKA_EXTRACTABLE));
    return 0;
  });
}

// A recycle with a fresh instance (SoftHSM's default): the store fills the new instance
// before the pool switches to it, so the cached subscribers' keys are there at once (no
// miss), correct, and destroyed in that instance when the store lets them go.
TEST_P(KeyStoreTest, ARecycleWithAFreshInstanceKeepsTheCachedKeys) {
  if (!context_->pool().config().fresh_instance) {
    GTEST_SKIP() << "this token is not recycled with a fresh instance (it does not leak)";
  }
  const auto id = [](int i) { return "sip:warm" + std::to_string(i) + "@ims.example.net"; };
  std::vector<Bytes> values;
  for (int i = 0; i < 3; ++i) {
    values.push_back(provision(IdentityKind::subscriber, id(i), tokens::KeyStoreMode::wrapped));
  }
  tokens::KeyStore store(*context_, *database_, 16);
  const tokens::TokenProfile& profile = context_->profile();
  keep_one_child(store);
  for (int i = 0; i < 3; ++i) store.resolve(IdentityKind::subscriber, id(i));
  const auto instance = context_->pool().module();
  ASSERT_TRUE(context_->pool().recycle());
  ASSERT_NE(context_->pool().module(), instance) << "a fresh instance serves now";
  EXPECT_EQ(session_objects(), 3u) << "the new instance holds the three children, nothing else";

  for (int i = 0; i < 3; ++i) {
    const auto key = store.resolve(IdentityKind::subscriber, id(i));
    EXPECT_TRUE(testkdf::key_holds(*context_, key.child(0),
                                   testkdf::kdf(profile.id, values[std::size_t(i)],
                                                testkdf::label("one"), testkdf::to_bytes(id(i)))))
        << id(i);
  }
  const tokens::KeyStoreStats stats = store.stats();
  EXPECT_EQ(stats.prewarmed, 3u);
  EXPECT_EQ(stats.misses, 3u) << "only the first resolves missed";
  EXPECT_EQ(stats.hits, 3u);
  store.clear();
  EXPECT_EQ(session_objects(), 0u);
}

// The services resolve a subscriber's keys before their pool operation (unknown subscribers
// are refused without a token call), so a recycle may switch to a fresh instance (SoftHSM;
// NSS softoken recycles in place: C_Finalize, C_Initialize) between a
// miss's unwrap, on the old instance, and its insertion into the cache, while another
// resolve() moves the cache to the new instance. Inside an operation (no switch can happen
// there) a resolve() must then hand out keys of the current instance only: the soak of
// 2026-12-04 found a stale entry kept, and every later request of its subscriber failed
// with CKR_OBJECT_HANDLE_INVALID. Many misses against back-to-back recycles make the
// interleaving frequent; before the fix this test failed on every run on SoftHSM.
TEST_P(KeyStoreTest, ResolvesAcrossRecyclesNeverCacheAKeyOfAnEarlierGeneration) {
  const int identities = 48;
  const auto id = [](int i) { return "sip:switch" + std::to_string(i) + "@ims.example.net"; };
  for (int i = 0; i < identities; ++i) {
    provision(IdentityKind::subscriber, id(i), tokens::KeyStoreMode::wrapped);
  }
  tokens::KeyStore store(*context_, *database_, 4);  // nearly every resolve() misses
  const tokens::TokenProfile& profile = context_->profile();
  keep_one_child(store);
  std::atomic<bool> done{false};
  std::atomic<int> recycles{0}, stale{0}, failures{0};
  std::thread recycler([&] {
    while (!done.load()) {
      try {
        if (context_->pool().recycle()) ++recycles;
        // A pause, so that back-to-back drains do not starve the resolvers' operations.
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      } catch (const std::exception& error) {
        if (++failures <= 3) ADD_FAILURE() << "recycle: " << error.what();
      }
    }
  });
  std::vector<std::thread> resolvers;
  for (int t = 0; t < 4; ++t) {
    resolvers.emplace_back([&, t] {
      for (int n = 0; n < 400; ++n) {
        const std::string identity = id((n * 5 + t * 11) % identities);
        try {
          tokens::ResolvedKey key = store.resolve(IdentityKind::subscriber, identity);
          context_->pool().run([&](hsm::Session& session) {
            // As the key-request service: a key of an earlier generation is resolved again.
            if (!key.current()) key = store.resolve(IdentityKind::subscriber, identity);
            if (!key.current()) {
              ++stale;
              return 0;
            }
            hsm::ObjectGuard use(
                session, tokens::derive(session, profile, key.child(0), testkdf::label("use"), {},
                                        tokens::templates::response_key()));
            return 0;
          });
        } catch (const std::exception& error) {
          if (++failures <= 3) ADD_FAILURE() << identity << ": " << error.what();
        }
      }
    });
  }
  for (auto& thread : resolvers) thread.join();
  done = true;
  recycler.join();
  EXPECT_GE(recycles.load(), 5) << "the switches this test is about happened";
  EXPECT_EQ(stale.load(), 0) << "resolve() inside an operation handed out a key of an old instance";
  EXPECT_EQ(failures.load(), 0);
  store.clear();
}

// Session objects die with the session that created them: after all sessions are closed
// behind the pool's back, the next operation recovers and the store unwraps again.
TEST_P(KeyStoreTest, LostSessionObjectsAreUnwrappedAgain) {
  const Bytes frank = provision(IdentityKind::subscriber, "sip:frank@ims.example.net",
                                tokens::KeyStoreMode::wrapped);
  tokens::KeyStore store(*context_, *database_, 4);
  auto use = [&] {
    return context_->pool().run([&](hsm::Session& session) {
      const auto key = store.resolve(IdentityKind::subscriber, "sip:frank@ims.example.net");
      hsm::ObjectGuard child(session, tokens::derive(session, context_->profile(), key.handle(),
                                                     testkdf::label("response"), {},
                                                     tokens::templates::response_key()));
      return key.handle();
    });
  };
  use();
  const auto generation = context_->pool().session_object_generation();
  context_->module()->functions()->C_CloseAllSessions(context_->pool().slot());
  EXPECT_NO_THROW(use());
  EXPECT_NE(context_->pool().session_object_generation(), generation);
  expect_is(store.resolve(IdentityKind::subscriber, "sip:frank@ims.example.net"), frank);
}

TEST_P(KeyStoreTest, ConcurrentResolvesWithASmallCache) {
  const int identities = 12;
  std::vector<Bytes> values;
  for (int i = 0; i < identities; ++i) {
    values.push_back(provision(IdentityKind::subscriber,
                               "sip:c" + std::to_string(i) + "@ims.example.net",
                               tokens::KeyStoreMode::wrapped));
  }
  tokens::KeyStore store(*context_, *database_, 3);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; n < 60; ++n) {
        const int i = (n * 7 + t) % identities;
        try {
          context_->pool().run([&](hsm::Session& session) {
            const auto key = store.resolve(IdentityKind::subscriber,
                                           "sip:c" + std::to_string(i) + "@ims.example.net");
            hsm::ObjectGuard child(session, tokens::derive(session, context_->profile(),
                                                           key.handle(), testkdf::label("response"),
                                                           {}, tokens::templates::response_key()));
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
  EXPECT_LE(store.stats().cached, 3u);
  store.clear();
}

INSTANTIATE_TEST_SUITE_P(Tokens, KeyStoreTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         tokentest::kind_param_name);

}  // namespace
