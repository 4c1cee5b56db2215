// identity -> a root key usable in the token, for subscribers and bridges alike.
//
// Wrapped mode (default): the record's wrapped key is unwrapped under the storage key into
// a session object created on the pool's pinned session (so it outlives worker sessions),
// and kept in a bounded LRU cache. Token mode: the token object is found once by label
// and its handle cached by the pool. Every resolve() checks the database record first (an
// index lookup): unknown and revoked identities never reach the token (beyond destroying
// a copy cached before the revocation), and a revocation or rotation by kms-provision takes
// effect on the next request.
//
// Child keys (keep_children()): for identities of one kind the store may keep, instead of the
// root key, keys derived from it once (the KMS keeps each subscriber's KE_X and KR_X: they
// depend only on the root key and the identity). They are session objects on the pinned
// session, cached and evicted with the entry; a wrapped root key is destroyed right after.
//
// The master key (master()) and the storage key that unwraps on a miss: session-object
// copies where the token permits copying them, else the token objects (docs/ARCHITECTURE.md
// "Key store"). Keys derived from M that are used again (media keys) are kept in
// derived_keys() (tokens/derived_key_cache.h).
//
// A recycle with a fresh instance (hsm/session_pool.h) would leave the cache empty and every
// subscriber's next request paying an unwrap and its derives at once, all on the pinned
// session. The store therefore fills the fresh instance before the pool switches to it: the
// cached wrapped-mode entries, most recent first, are unwrapped and their children derived
// there on a thread of the recycle at low priority (KeyStoreStats::prewarmed), and become
// the cache when the switch happens. If the recycle falls overdue meanwhile (the machine
// busy with requests), the filling stops and the rest fills on use.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hsm/session_pool.h"
#include "tokens/derived_key_cache.h"
#include "tokens/identity.h"
#include "tokens/key_database.h"
#include "tokens/stored_key.h"
#include "tokens/token_context.h"

namespace tokens {

// resolve() of an identity that has no record, or whose record is revoked.
class LookupError : public std::runtime_error {
 public:
  enum class Reason { unknown, revoked };
  LookupError(Reason reason, IdentityKind kind, std::string identity);
  Reason reason() const noexcept { return reason_; }
  IdentityKind kind() const noexcept { return kind_; }
  const std::string& identity() const noexcept { return identity_; }

 private:
  Reason reason_;
  IdentityKind kind_;
  std::string identity_;
};

struct ResolvedKey {
  std::shared_ptr<const StoredKey> key;  // keep it while using handle()
  std::uint32_t key_version = 0;
  IdentityKind kind = IdentityKind::subscriber;
  CK_OBJECT_HANDLE handle() const noexcept { return key->handle(); }
  CK_OBJECT_HANDLE child(std::size_t i) const { return key->child(i); }
  bool current() const noexcept { return key->current(); }
};

// Derives the keys kept for an identity from its root key (in `session`, the pinned one) and
// returns their handles: session objects the store owns from then on. On an exception it
// must leave nothing behind (hsm::ObjectGuard).
using ChildKeys = std::function<std::vector<CK_OBJECT_HANDLE>(
    hsm::Session& session, CK_OBJECT_HANDLE root, std::string_view identity)>;

struct KeyStoreStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;  // unwraps (wrapped mode) or pool handle lookups (token mode)
  std::uint64_t evictions = 0;
  std::uint64_t refused = 0;    // unknown or revoked
  std::uint64_t prewarmed = 0;  // entries made in a fresh instance before a recycle switched to it
  std::size_t cached = 0;
  // master() hands out a session-object copy of M (false: the token object, because the
  // token refused the copy, or before the first master()).
  bool master_copy = false;
  // Unwraps use a session-object copy of the storage key (false: the token object, because
  // the token refused the copy, or before the first unwrap).
  bool storage_copy = false;
};

class KeyStore {
 public:
  // cache_size: at most this many identities' keys are kept (>= 1); derived_cache_size: at
  // most this many keys in derived_keys() (0: that cache is off). The token context and the database must
  // outlive the store.
  KeyStore(TokenContext& token, KeyDatabase& database, std::size_t cache_size,
           std::size_t derived_cache_size = 1024);
  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  // Throws LookupError (unknown / revoked), hsm::Error (token), DatabaseError. Thread-safe.
  // Call it inside the SessionPool::run() operation that uses the handle: when the token
  // loses session objects, the retry resolves again and gets a fresh handle.
  ResolvedKey resolve(IdentityKind kind, std::string_view identity);
  // Drops a cached key (e.g. after a failure that suggests its handle is stale).
  void forget(IdentityKind kind, std::string_view identity);
  // From now on identities of this kind are kept as the keys `derive` makes from their root
  // key (ResolvedKey::child()); an empty function keeps root keys again. Drops the cache.
  void keep_children(IdentityKind kind, ChildKeys derive);
  // The master key M for `session`'s operation: a session-object copy of the token object
  // (C_CopyObject with CKA_TOKEN=FALSE, made on the pinned session once per session-object
  // generation) where the token permits copying M, else the token object itself (SoftHSM
  // refuses to copy a CKA_COPYABLE=FALSE key: CKR_ACTION_PROHIBITED). Keep the result while
  // using its handle(); call it inside the run() that uses it, as resolve().
  std::shared_ptr<const StoredKey> master(hsm::Session& session);
  // Keys derived from M (or any key of this token) kept by name for their next use.
  DerivedKeyCache& derived_keys() noexcept { return derived_; }
  void clear();
  KeyStoreStats stats() const;

 private:
  using Lru = std::list<std::string>;  // cache keys (kind + identity), most recent first
  struct Entry {
    std::uint32_t version;
    std::shared_ptr<const StoredKey> key;
    Lru::iterator position;
  };
  // Entries made in a fresh instance for a session-object generation yet to come.
  struct Prepared {
    std::string cache_key;
    std::uint32_t version;
    std::shared_ptr<const StoredKey> key;
  };
  // SessionPool::on_fresh_instance(): on the pool's filling thread; stops early at `stop`.
  void prepare_fresh_instance(hsm::Session& pinned, std::uint64_t generation,
                              const std::stop_token& stop);
  std::shared_ptr<const StoredKey> cached(const std::string& cache_key, std::uint32_t version);
  std::shared_ptr<const StoredKey> unwrap(const IdentityRecord& record, const ChildKeys& derive);
  // Unwraps `record` under `storage_key` on `session` and derives its children there: a
  // StoredKey of the root key, or of the children only, stamped with `generation`.
  std::shared_ptr<const StoredKey> unwrap_on(hsm::Session& session, CK_OBJECT_HANDLE storage_key,
                                             const IdentityRecord& record, const ChildKeys& derive,
                                             std::uint64_t generation);
  std::shared_ptr<const StoredKey> find_token_object(const IdentityRecord& record,
                                                     const ChildKeys& derive);
  ChildKeys children_of(IdentityKind kind) const;
  // On the pinned session (inside run_pinned): the storage key's handle for an unwrap.
  CK_OBJECT_HANDLE storage_key(hsm::Session& pinned);
  // mutex_ held: drops what was cached for an earlier session-object generation into
  // `dropped` (released by the caller after the lock).
  void follow_generation_locked(std::vector<std::shared_ptr<const StoredKey>>& dropped);
  void insert(const std::string& cache_key, std::uint32_t version,
              std::shared_ptr<const StoredKey> key);

  TokenContext& token_;
  KeyDatabase& database_;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::uint64_t generation_ = 0;  // pool.session_object_generation() the cache belongs to
  Lru lru_;
  std::unordered_map<std::string, Entry> entries_;
  KeyStoreStats stats_;
  std::array<ChildKeys, 2> children_;  // by IdentityKind
  std::shared_ptr<const StoredKey> master_copy_;
  std::uint64_t prepared_generation_ = 0;  // guarded by mutex_
  std::vector<Prepared> prepared_;         // guarded by mutex_; most recent first
  bool master_copy_refused_ = false;       // the token refused C_CopyObject of M: never asked again
  // Touched only on the pinned session (run_pinned serialises): no lock.
  std::shared_ptr<const StoredKey> storage_copy_;
  bool storage_copy_refused_ = false;
  // Last: its keys go before master_copy_ (they may be derived from it).
  DerivedKeyCache derived_;
};

}  // namespace tokens
