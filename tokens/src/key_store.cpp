#include "tokens/key_store.h"

#include "hsm/error.h"
#include "tokens/key_templates.h"

namespace tokens {
namespace {

std::string cache_key(IdentityKind kind, std::string_view identity) {
  return std::string(kind_name(kind)) + '\n' + std::string(identity);
}

}  // namespace

LookupError::LookupError(Reason reason, IdentityKind kind, std::string identity)
    : std::runtime_error(std::string(kind_name(kind)) + " " + identity +
                         (reason == Reason::unknown ? " is not provisioned" : " is revoked")),
      reason_(reason),
      kind_(kind),
      identity_(std::move(identity)) {}

StoredKey::StoredKey(hsm::SessionPool* pool, CK_OBJECT_HANDLE handle, bool owned,
                     std::uint64_t generation)
    : pool_(pool), handle_(handle), owned_(owned), generation_(generation) {}

StoredKey::~StoredKey() {
  // A handle from an earlier generation is dead already, and the number may have been
  // reused by the token for another object: never destroy it then.
  if (!owned_ || pool_->session_object_generation() != generation_) return;
  try {
    pool_->run_pinned([this](hsm::Session& session) {
      if (pool_->session_object_generation() == generation_) session.destroy(handle_);
      return 0;
    });
  } catch (...) {  // the object dies with the pinned session at the latest
  }
}

KeyStore::KeyStore(TokenContext& token, KeyDatabase& database, std::size_t cache_size)
    : token_(token),
      database_(database),
      capacity_(cache_size == 0 ? 1 : cache_size),
      generation_(token.pool().session_object_generation()) {}

KeyStore::~KeyStore() { clear(); }

ResolvedKey KeyStore::resolve(IdentityKind kind, std::string_view identity) {
  std::optional<IdentityRecord> record = database_.find(kind, identity);
  if (!record || record->status == KeyStatus::revoked) {
    {
      std::lock_guard lock(mutex_);
      ++stats_.refused;
    }
    forget(kind, identity);  // a key cached before the revocation has no further use
    throw LookupError(record ? LookupError::Reason::revoked : LookupError::Reason::unknown, kind,
                      std::string(identity));
  }
  const std::string key = cache_key(kind, identity);
  std::shared_ptr<const StoredKey> stored = cached(key, record->key_version);
  if (!stored) {
    std::shared_ptr<const StoredKey> fresh =
        record->mode == KeyStoreMode::token ? find_token_object(*record) : unwrap(*record);
    insert(key, record->key_version, fresh);
    stored = std::move(fresh);
  }
  return ResolvedKey{std::move(stored), record->key_version, kind};
}

std::shared_ptr<const StoredKey> KeyStore::cached(const std::string& key, std::uint32_t version) {
  std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  const std::uint64_t generation = token_.pool().session_object_generation();
  if (generation != generation_) {
    for (auto& [name, entry] : entries_) dropped.push_back(std::move(entry.key));
    entries_.clear();
    lru_.clear();
    generation_ = generation;
  }
  auto found = entries_.find(key);
  if (found == entries_.end() || found->second.version != version) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, found->second.position);
  return found->second.key;
}

void KeyStore::insert(const std::string& key, std::uint32_t version,
                      std::shared_ptr<const StoredKey> stored) {
  std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  if (generation_ != token_.pool().session_object_generation()) {
    dropped.push_back(std::move(stored));  // its session objects are gone already
    return;
  }
  auto found = entries_.find(key);
  if (found != entries_.end()) {
    // Another thread unwrapped it first, or an older version (rotation): keep the newest.
    if (found->second.version > version) {
      dropped.push_back(std::move(stored));
      return;
    }
    dropped.push_back(std::move(found->second.key));
    found->second.key = std::move(stored);
    found->second.version = version;
    lru_.splice(lru_.begin(), lru_, found->second.position);
    return;
  }
  lru_.push_front(key);
  entries_.emplace(key, Entry{version, std::move(stored), lru_.begin()});
  while (entries_.size() > capacity_) {
    auto entry = entries_.find(lru_.back());
    dropped.push_back(std::move(entry->second.key));
    entries_.erase(entry);
    lru_.pop_back();
    ++stats_.evictions;
  }
}

std::shared_ptr<const StoredKey> KeyStore::unwrap(const IdentityRecord& record) {
  hsm::SessionPool& pool = token_.pool();
  const TokenProfile& profile = token_.profile();
  const hsm::KeyRef storage = storage_key_ref();
  return pool.run_pinned([&](hsm::Session& session) {
    const std::uint64_t generation = pool.session_object_generation();
    const CK_OBJECT_HANDLE storage_key = pool.resolve(session, storage);
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    try {
      handle = unwrap_aes_key(
          session, profile, storage_key, record.wrapped_key,
          templates::root_key(profile, record.kind, record.identity, record.key_version, false));
    } catch (const hsm::Error& error) {
      if (error.recoverable()) throw;  // run_pinned recovers and runs this again
      throw error.with_context("unwrapping the stored key of " +
                               std::string(kind_name(record.kind)) + " " + record.identity + " v" +
                               std::to_string(record.key_version));
    }
    return std::make_shared<const StoredKey>(&pool, handle, true, generation);
  });
}

std::shared_ptr<const StoredKey> KeyStore::find_token_object(const IdentityRecord& record) {
  hsm::SessionPool& pool = token_.pool();
  const hsm::KeyRef ref = root_key_ref(record.kind, record.identity, record.key_version);
  // On the pinned session: the caller may already hold a pooled session, and taking a
  // second one from a busy pool could wait for ever.
  const CK_OBJECT_HANDLE handle =
      pool.run_pinned([&](hsm::Session& session) { return pool.resolve(session, ref); });
  // Token objects are not destroyed by the store; the handle is the pool's cached one.
  return std::make_shared<const StoredKey>(&pool, handle, false, 0);
}

void KeyStore::forget(IdentityKind kind, std::string_view identity) {
  std::shared_ptr<const StoredKey> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  auto found = entries_.find(cache_key(kind, identity));
  if (found == entries_.end()) return;
  dropped = std::move(found->second.key);
  lru_.erase(found->second.position);
  entries_.erase(found);
}

void KeyStore::clear() {
  std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  for (auto& [name, entry] : entries_) dropped.push_back(std::move(entry.key));
  entries_.clear();
  lru_.clear();
}

KeyStoreStats KeyStore::stats() const {
  std::lock_guard lock(mutex_);
  KeyStoreStats stats = stats_;
  stats.cached = entries_.size();
  return stats;
}

}  // namespace tokens
