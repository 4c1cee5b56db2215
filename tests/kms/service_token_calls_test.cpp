// What one key request costs the token, counted through the PKCS#11 call observer (a count,
// deterministic), and key requests across module recycles (tokens/token_quirks.h
// leaks_destroyed_session_objects): none fails, the recycles are counted, and the token's
// live objects and handle numbers stay bounded.
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hsm/instrumentation.h"
#include "service_fixture.h"

namespace kmstest {
namespace {

using kms::client::Bytes;
using kms::client::UeClient;

// Counts every PKCS#11 call by function while it lives (the observer is process-wide).
class CallCounter {
 public:
  CallCounter() {
    hsm::set_call_observer([this](const char* function, CK_RV, std::chrono::nanoseconds) {
      std::lock_guard lock(mutex_);
      ++counts_[function];
    });
  }
  ~CallCounter() { hsm::set_call_observer({}); }
  CallCounter(const CallCounter&) = delete;
  CallCounter& operator=(const CallCounter&) = delete;
  std::map<std::string, int> counts() {
    std::lock_guard lock(mutex_);
    return counts_;
  }
  int total() {
    int sum = 0;
    for (const auto& [function, count] : counts()) sum += count;
    return sum;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, int> counts_;
};

class TokenCalls : public ServiceTest {
 protected:
  // One admission, both responses opened by the UEs.
  void invite(const UeClient& chair, const UeClient& member) {
    const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
    const kms::KeyResponse response =
        bed->key_requests().handle(request(chair, r_a, member, r_b), context());
    member.open_responder_response(response.responder_response, r_b, chair.identity(), kSuite,
                                   response.conference_id);
    chair.open_chair_response(response.chair_response, r_a, member.identity(), kSuite);
  }

  // The release's items as the bridge opens them, by member.
  std::map<std::string, Bytes> open_items(const kms::BridgeRelease& release) {
    const kms::client::BridgeClient bridge = bed->bridge(bridge_id, bridge_key);
    std::map<std::string, Bytes> keys;
    for (const kms::ReleasedKey& item : release.keys) {
      keys[item.member_id] =
          bytes(bridge
                    .open(release.conference_id,
                          {item.member_id, item.role, item.key_id, item.suite, item.wrapped})
                    .key);
    }
    return keys;
  }

  // Media keys (generic secrets) among the token's session objects.
  std::size_t media_keys_in_token() {
    return bed->token().pool().run([](hsm::Session& session) {
      hsm::AttributeTemplate match;
      match.set_bool(CKA_TOKEN, false).set_ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET);
      return session.find(std::move(match)).size();
    });
  }
};

// Before the key store kept KE_X and KR_X: 23 calls (8 C_DeriveKey, 8 C_DestroyObject, 2 x
// C_DecryptInit + C_Decrypt, 2 C_WrapKey, 1 C_GetSessionInfo); before media keys were kept,
// 14. Now per request of a new conference: two decrypts under the kept KE_A / KE_B, K1 and
// K2 derived from M and kept (tokens/derived_key_cache.h), two W from the kept KR, two
// wraps, the two W destroyed.
TEST_P(TokenCalls, AKeyRequestMakesTwelveTokenCalls) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  invite(a, b);  // warm-up: KMS keys found, A's and B's keys unwrapped and derived
  constexpr int kRequests = 10;
  std::map<std::string, int> counts;
  {
    CallCounter counter;
    for (int i = 0; i < kRequests; ++i) invite(a, b);
    counts = counter.counts();
  }
  // A session given back less than a second ago is not checked again (PoolConfig::
  // validate_after_idle): at most one of these requests may meet an older one.
  EXPECT_LE(counts["C_GetSessionInfo"], 1);
  counts.erase("C_GetSessionInfo");
  const std::map<std::string, int> expected = {{"C_DecryptInit", 2 * kRequests},
                                               {"C_Decrypt", 2 * kRequests},
                                               {"C_DeriveKey", 4 * kRequests},
                                               {"C_WrapKey", 2 * kRequests},
                                               {"C_DestroyObject", 2 * kRequests}};
  EXPECT_EQ(counts, expected);
  EXPECT_EQ(bed->store().derived_keys().stats().cached, 2u * (kRequests + 1));
  // M through a session-object copy where the token copies it: NSS (M has no CKA_COPYABLE
  // there); SoftHSM refuses to copy M (CKA_COPYABLE=FALSE), the token object is used.
  EXPECT_EQ(bed->store().stats().master_copy, GetParam() == testsupport::TokenKind::nss);
}

// The chair's K1 is derived once per conference: the next invitations use the kept one, and
// the bridge's release derives no media key at all, only each item's wrapping key.
TEST_P(TokenCalls, KeptMediaKeysServeLaterInvitationsAndTheRelease) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  invite(a, b);  // warm-up: A's and B's keys
  invite(c, a);  // C's keys
  // The bridge's key unwrapped by a first release, of another conference.
  const kms::KeyResponse warm_up = bed->key_requests().handle(
      request(a, UeClient::make_nonce(), b, UeClient::make_nonce()), context());
  bed->bridges().release(bridge_id, warm_up.conference_id, context("bridge"));
  const kms::client::Secret r_a = UeClient::make_nonce();
  const kms::client::Secret r_b = UeClient::make_nonce();
  const kms::client::Secret r_c = UeClient::make_nonce();
  const kms::KeyResponse first = bed->key_requests().handle(request(a, r_a, b, r_b), context());
  std::map<std::string, int> counts;
  {
    CallCounter counter;
    const kms::KeyResponse second = bed->key_requests().handle(request(a, r_a, c, r_c), context());
    EXPECT_EQ(second.conference_id, first.conference_id);
    counts = counter.counts();
  }
  counts.erase("C_GetSessionInfo");
  // K1 kept: one derive from M (C's K3) and the two W.
  EXPECT_EQ(counts["C_DeriveKey"], 3);
  EXPECT_EQ(counts["C_WrapKey"], 2);
  EXPECT_EQ(counts["C_DestroyObject"], 2);

  kms::BridgeRelease release;
  {
    CallCounter counter;
    release = bed->bridges().release(bridge_id, first.conference_id, context("bridge"));
    counts = counter.counts();
  }
  counts.erase("C_GetSessionInfo");
  ASSERT_EQ(release.keys.size(), 3u);
  // Per item: the bridge's wrapping key derived, the kept K wrapped under it, W destroyed.
  const std::map<std::string, int> expected = {
      {"C_DeriveKey", 3}, {"C_WrapKey", 3}, {"C_DestroyObject", 3}};
  EXPECT_EQ(counts, expected);
  // And the items are the keys the UEs got.
  const kms::client::MediaKey k1 = a.open_chair_response(first.chair_response, r_a, b_id, kSuite);
  const kms::client::MediaKey k2 =
      b.open_responder_response(first.responder_response, r_b, a_id, kSuite, first.conference_id);
  std::map<std::string, Bytes> released = open_items(release);
  EXPECT_EQ(released[a_id], bytes(k1.key));
  EXPECT_EQ(released[b_id], bytes(k2.key));
}

// Refusals that need no key are made before any token call.
TEST_P(TokenCalls, UnknownSubscribersAndStaleKeyVersionsMakeNoTokenCall) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  invite(a, b);
  const UeClient stranger = ue("sip:mallory@ims.example.net", random_key());
  const UeClient old_a(a_id, k_a, 2, bed->profile());  // names key version 2; current is 1
  CallCounter counter;
  EXPECT_EQ(error_of([&] {
              bed->key_requests().handle(
                  request(stranger, UeClient::make_nonce(), b, UeClient::make_nonce()), context());
            }),
            kms::ErrorCode::unknown_subscriber);
  EXPECT_EQ(error_of([&] {
              bed->key_requests().handle(
                  request(old_a, UeClient::make_nonce(), b, UeClient::make_nonce()), context());
            }),
            kms::ErrorCode::key_version_mismatch);
  EXPECT_EQ(counter.total(), 0) << "a token call for a request refused by the database";
}

// A replay of an envelope admitted through this registry is refused before any token call
// (kms/core/recent_envelopes.h); the identical request again is a retransmission and is
// answered as before.
TEST_P(TokenCalls, AReplayOfAnAdmittedEnvelopeMakesNoTokenCall) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  invite(a, b);  // warm-up
  const kms::KeyRequest first = request(a, UeClient::make_nonce(), b, UeClient::make_nonce());
  const kms::KeyResponse admitted = bed->key_requests().handle(first, context());
  // The same E_A beside a new E_B: another request, an envelope already used.
  kms::KeyRequest replay = request(a, UeClient::make_nonce(), b, UeClient::make_nonce());
  replay.chair_envelope = first.chair_envelope;
  {
    CallCounter counter;
    EXPECT_EQ(error_of([&] { bed->key_requests().handle(replay, context()); }),
              kms::ErrorCode::replay);
    EXPECT_EQ(counter.total(), 0) << "a token call for a replayed envelope";
  }
  // The same E_B beside a new E_A: refused the same way.
  replay = request(a, UeClient::make_nonce(), b, UeClient::make_nonce());
  replay.responder_envelope = first.responder_envelope;
  {
    CallCounter counter;
    EXPECT_EQ(error_of([&] { bed->key_requests().handle(replay, context()); }),
              kms::ErrorCode::replay);
    EXPECT_EQ(counter.total(), 0) << "a token call for a replayed envelope";
  }
  // The first request again, byte for byte: a retransmission, the same answer.
  CallCounter counter;
  const kms::KeyResponse again = bed->key_requests().handle(first, context());
  EXPECT_GT(counter.total(), 0);
  EXPECT_EQ(again.conference_id, admitted.conference_id);
  EXPECT_EQ(again.chair_response, admitted.chair_response);
  EXPECT_EQ(again.responder_response, admitted.responder_response);
}

// A cache smaller than a conference: every use past the first evicts, the evicted keys are
// destroyed (none stays behind in the token) and derived again, and the keys are the same.
class SmallMediaKeyCache : public TokenCalls {
 protected:
  TestbedOptions options() override {
    TestbedOptions o;
    o.media_key_cache_size = 1;
    return o;
  }
};

TEST_P(SmallMediaKeyCache, EvictedMediaKeysAreDestroyedAndDerivedAgainAlike) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  const kms::client::Secret r_a = UeClient::make_nonce();
  const kms::client::Secret r_b = UeClient::make_nonce();
  const kms::client::Secret r_c = UeClient::make_nonce();
  const kms::KeyResponse with_b = bed->key_requests().handle(request(a, r_a, b, r_b), context());
  const kms::KeyResponse with_c = bed->key_requests().handle(request(a, r_a, c, r_c), context());
  const kms::client::MediaKey k1 = a.open_chair_response(with_c.chair_response, r_a, c_id, kSuite);
  EXPECT_EQ(bytes(a.open_chair_response(with_b.chair_response, r_a, b_id, kSuite).key),
            bytes(k1.key));
  const kms::client::MediaKey k3 =
      c.open_responder_response(with_c.responder_response, r_c, a_id, kSuite, with_c.conference_id);
  for (int round = 0; round < 2; ++round) {  // a retransmitted fetch: the same items again
    const kms::BridgeRelease release =
        bed->bridges().release(bridge_id, with_b.conference_id, context("bridge"));
    ASSERT_EQ(release.keys.size(), 3u);
    std::map<std::string, Bytes> released = open_items(release);
    EXPECT_EQ(released[a_id], bytes(k1.key));
    EXPECT_EQ(released[c_id], bytes(k3.key));
  }
  const tokens::DerivedKeyCacheStats stats = bed->store().derived_keys().stats();
  EXPECT_EQ(stats.cached, 1u);
  EXPECT_GE(stats.evictions, 4u);
  // Media keys (generic secrets) in the token: the one kept, no evicted one left behind.
  EXPECT_EQ(media_keys_in_token(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Tokens, SmallMediaKeyCache,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

// [token] media_key_cache_size = 0: the cache off, each media key derived in the request's
// own session and destroyed after it (14 calls per request, as before the cache), nothing
// kept, the same keys.
class MediaKeyCacheOff : public TokenCalls {
 protected:
  TestbedOptions options() override {
    TestbedOptions o;
    o.media_key_cache_size = 0;
    return o;
  }
};

TEST_P(MediaKeyCacheOff, EveryUseDerivesAndDestroysItsMediaKey) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b);
  invite(a, b);  // warm-up
  const kms::KeyResponse warm_up = bed->key_requests().handle(
      request(a, UeClient::make_nonce(), b, UeClient::make_nonce()), context());
  bed->bridges().release(bridge_id, warm_up.conference_id, context("bridge"));
  const kms::client::Secret r_a = UeClient::make_nonce(), r_b = UeClient::make_nonce();
  std::map<std::string, int> counts;
  kms::KeyResponse response;
  kms::BridgeRelease release;
  {
    CallCounter counter;
    response = bed->key_requests().handle(request(a, r_a, b, r_b), context());
    release = bed->bridges().release(bridge_id, response.conference_id, context("bridge"));
    counts = counter.counts();
  }
  counts.erase("C_GetSessionInfo");
  // The request: K1, K2, W_A, W_B derived and destroyed; the release: K and BW per member.
  const std::map<std::string, int> expected = {{"C_DecryptInit", 2},
                                               {"C_Decrypt", 2},
                                               {"C_DeriveKey", 4 + 2 * 2},
                                               {"C_WrapKey", 2 + 2},
                                               {"C_DestroyObject", 4 + 2 * 2}};
  EXPECT_EQ(counts, expected);
  const kms::client::MediaKey k1 =
      a.open_chair_response(response.chair_response, r_a, b_id, kSuite);
  ASSERT_EQ(release.keys.size(), 2u);
  EXPECT_EQ(open_items(release)[a_id], bytes(k1.key));
  EXPECT_EQ(bed->store().derived_keys().stats().cached, 0u);
  EXPECT_EQ(media_keys_in_token(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Tokens, MediaKeyCacheOff,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

INSTANTIATE_TEST_SUITE_P(Tokens, TokenCalls,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

class RecycledTokenCalls : public TokenCalls {
 protected:
  TestbedOptions options() override {
    TestbedOptions o;
    o.recycle_after_objects = 200;
    return o;
  }
};

TEST_P(RecycledTokenCalls, KeyRequestsSucceedAcrossModuleRecycles) {
  const UeClient a = ue(a_id, k_a), b = ue(b_id, k_b), c = ue(c_id, k_c);
  hsm::SessionPool& pool = bed->token().pool();
  std::atomic<int> recycles_seen{0};
  pool.on_recycle([&](std::chrono::microseconds) { ++recycles_seen; });

  // 4 threads x at least 60 requests x 4 objects, a recycle due every 200 objects. On
  // SoftHSM the recycles run on the pool's thread and one due while another runs is skipped,
  // so the threads go on until three have happened (an event, not a time; bounded).
  constexpr int kThreads = 4, kRequests = 60, kMaxRequests = 2000;
  constexpr std::uint64_t kRecycles = 3;
  std::atomic<int> succeeded{0}, attempted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kMaxRequests && (i < kRequests || pool.stats().recycles < kRecycles);
           ++i) {
        ++attempted;
        try {
          if ((t + i) % 2 == 0) {
            invite(a, b);
          } else {
            invite(c, a);
          }
          ++succeeded;
        } catch (const std::exception& error) {
          ADD_FAILURE() << "a key request failed: " << error.what();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  pool.finish_retiring();  // SoftHSM recycles with a fresh instance on a thread of the pool's

  EXPECT_EQ(succeeded.load(), attempted.load());
  const hsm::PoolStats stats = pool.stats();
  EXPECT_GE(stats.recycles, kRecycles);
  EXPECT_EQ(stats.fresh_instance_failures, 0u);
  EXPECT_EQ(recycles_seen.load(), static_cast<int>(stats.recycles));
  EXPECT_EQ(stats.recycles_abandoned, 0u);
  EXPECT_EQ(stats.acquire_timeouts, 0u);
  EXPECT_EQ(stats.reinitializations, 0u);

  // Live session objects: the kept KE/KR of the three subscribers, at most one copy each of
  // M and of the storage key (they keep their labels), and the kept media keys (generic
  // secrets; the media-key cache's bound).
  std::size_t live = 0, kms_key_copies = 0, media_keys = 0;
  pool.run([&](hsm::Session& session) {
    hsm::AttributeTemplate match;
    match.set_bool(CKA_TOKEN, false);
    live = kms_key_copies = media_keys = 0;
    for (CK_OBJECT_HANDLE handle : session.find(std::move(match))) {
      const std::string label = session.get_string(handle, CKA_LABEL);
      const bool copy =
          label == tokens::master_key_ref().label || label == tokens::storage_key_ref().label;
      if (copy) {
        ++kms_key_copies;
      } else if (session.get_ulong(handle, CKA_KEY_TYPE) == CKK_GENERIC_SECRET) {
        ++media_keys;
      } else {
        ++live;
      }
    }
    return 0;
  });
  EXPECT_LE(live, 3u * 2u);
  EXPECT_LE(kms_key_copies, 2u);
  EXPECT_LE(media_keys, options().media_key_cache_size);
  EXPECT_EQ(media_keys, bed->store().derived_keys().stats().cached);
  if (GetParam() == testsupport::TokenKind::softhsm) {
    // SoftHSM numbers objects from a counter that restarts with C_Initialize: the next
    // object's number is bounded by the recycle threshold, not by the ~1,000 made so far.
    const CK_OBJECT_HANDLE next = pool.run([](hsm::Session& session) {
      const CK_OBJECT_HANDLE key = testsupport::generate_session_aes_key(session);
      session.destroy(key);
      return key;
    });
    EXPECT_LT(next, 600u);
  }
}

INSTANTIATE_TEST_SUITE_P(Tokens, RecycledTokenCalls,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         kind_test_name);

}  // namespace
}  // namespace kmstest
