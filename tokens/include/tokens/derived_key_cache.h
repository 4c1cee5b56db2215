// Keys the KMS derives from the master key M and uses more than once, kept in the token as
// session objects for their next use instead of derived again: the chair's K1 (one per
// conference, needed by every invitation of it and by the bridge's release) and each
// member's K (made at its admission, needed again by the release). A bounded LRU keyed by
// SHA-256 of the derivation's label and context (the contexts hold the UEs' nonces; the
// cache keeps only their digest). The objects live on the pool's pinned session, stamped
// with its session-object generation: after a recycle or a recovery they are dead, the
// cache forgets them and the next use derives again. Custody is unchanged: every one of them
// could be derived again from M at any time by the same process (docs/ARCHITECTURE.md
// "Media-key cache").
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hsm/session_pool.h"
#include "tokens/stored_key.h"

namespace tokens {

struct DerivedKeyCacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;  // derives (on the pinned session)
  std::uint64_t evictions = 0;
  std::size_t cached = 0;
};

class DerivedKeyCache {
 public:
  using Digest = std::array<std::uint8_t, 32>;
  // Derives the key in `pinned` and returns its handle: a session object the cache owns from
  // then on (must leave nothing behind when it throws).
  using Derive = std::function<CK_OBJECT_HANDLE(hsm::Session& pinned)>;

  // capacity: at most this many keys are kept; 0: the cache is off (enabled() false; get()
  // then derives every time and keeps nothing). The pool must outlive the cache.
  DerivedKeyCache(hsm::SessionPool& pool, std::size_t capacity);
  bool enabled() const noexcept { return capacity_ > 0; }
  ~DerivedKeyCache();
  DerivedKeyCache(const DerivedKeyCache&) = delete;
  DerivedKeyCache& operator=(const DerivedKeyCache&) = delete;

  // SHA-256(len(label) || label || context): what names a derivation in the cache.
  static Digest name(std::string_view label, hsm::ByteView context);

  // The key cached under `name`, or the one `derive` makes now (then kept). Keep the result
  // while using its handle(); call it inside the SessionPool::run() that uses it (as
  // KeyStore::resolve()): a run again after a recovery gets a live key. Thread-safe.
  std::shared_ptr<const StoredKey> get(const Digest& name, const Derive& derive);
  void clear();
  DerivedKeyCacheStats stats() const;

 private:
  using Lru = std::list<Digest>;  // most recent first
  struct DigestHash {
    std::size_t operator()(const Digest& d) const noexcept;
  };
  struct Entry {
    std::shared_ptr<const StoredKey> key;
    Lru::iterator position;
  };
  // mutex_ held: the entry for `name` if it is of the current generation (made most recent).
  std::shared_ptr<const StoredKey> find_locked(
      const Digest& name, std::vector<std::shared_ptr<const StoredKey>>& dropped);

  hsm::SessionPool& pool_;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::uint64_t generation_;  // the pool's session-object generation the entries belong to
  Lru lru_;
  std::unordered_map<Digest, Entry, DigestHash> entries_;
  DerivedKeyCacheStats stats_;
};

}  // namespace tokens
