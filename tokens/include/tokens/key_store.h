// identity -> a root key usable in the token, for subscribers and bridges alike.
//
// Wrapped mode (default): the record's wrapped key is unwrapped under the storage key into
// a session object created on the pool's pinned session (so it outlives worker sessions),
// and kept in a bounded LRU cache. Token mode: the token object is found once by label
// and its handle cached by the pool. Every resolve() checks the database record first (an
// index lookup): unknown and revoked identities never reach the token (beyond destroying
// a copy cached before the revocation), and a revocation or rotation by kms-provision takes
// effect on the next request.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

#include "hsm/session_pool.h"
#include "tokens/identity.h"
#include "tokens/key_database.h"
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

// A root key in the token. A session object (wrapped mode) is destroyed when the last
// holder releases it, unless the session objects it belonged to are already gone.
class StoredKey {
 public:
  StoredKey(hsm::SessionPool* pool, CK_OBJECT_HANDLE handle, bool owned, std::uint64_t generation);
  ~StoredKey();
  StoredKey(const StoredKey&) = delete;
  StoredKey& operator=(const StoredKey&) = delete;
  CK_OBJECT_HANDLE handle() const noexcept { return handle_; }

 private:
  hsm::SessionPool* pool_;
  CK_OBJECT_HANDLE handle_;
  bool owned_;
  std::uint64_t generation_;
};

struct ResolvedKey {
  std::shared_ptr<const StoredKey> key;  // keep it while using handle()
  std::uint32_t key_version = 0;
  IdentityKind kind = IdentityKind::subscriber;
  CK_OBJECT_HANDLE handle() const noexcept { return key->handle(); }
};

struct KeyStoreStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;  // unwraps (wrapped mode) or pool handle lookups (token mode)
  std::uint64_t evictions = 0;
  std::uint64_t refused = 0;  // unknown or revoked
  std::size_t cached = 0;
};

class KeyStore {
 public:
  // cache_size: at most this many unwrapped session objects are kept (>= 1). The token
  // context and the database must outlive the store.
  KeyStore(TokenContext& token, KeyDatabase& database, std::size_t cache_size);
  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  // Throws LookupError (unknown / revoked), hsm::Error (token), DatabaseError. Thread-safe.
  // Call it inside the SessionPool::run() operation that uses the handle: when the token
  // loses session objects, the retry resolves again and gets a fresh handle.
  ResolvedKey resolve(IdentityKind kind, std::string_view identity);
  // Drops a cached key (e.g. after a failure that suggests its handle is stale).
  void forget(IdentityKind kind, std::string_view identity);
  void clear();
  KeyStoreStats stats() const;

 private:
  using Lru = std::list<std::string>;  // cache keys (kind + identity), most recent first
  struct Entry {
    std::uint32_t version;
    std::shared_ptr<const StoredKey> key;
    Lru::iterator position;
  };
  std::shared_ptr<const StoredKey> cached(const std::string& cache_key, std::uint32_t version);
  std::shared_ptr<const StoredKey> unwrap(const IdentityRecord& record);
  std::shared_ptr<const StoredKey> find_token_object(const IdentityRecord& record);
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
};

}  // namespace tokens
