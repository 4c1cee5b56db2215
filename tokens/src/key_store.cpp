#include "tokens/key_store.h"

#include <utility>

#include "hsm/error.h"
#include "tokens/key_templates.h"

namespace tokens {
namespace {

std::string cache_key(IdentityKind kind, std::string_view identity) {
  return std::string(kind_name(kind)) + '\n' + std::string(identity);
}

IdentityKind kind_of_cache_key(std::string_view key) {
  return key.substr(0, key.find('\n')) == kind_name(IdentityKind::bridge)
             ? IdentityKind::bridge
             : IdentityKind::subscriber;
}

}  // namespace

LookupError::LookupError(Reason reason, IdentityKind kind, std::string identity)
    : std::runtime_error(std::string(kind_name(kind)) + " " + identity +
                         (reason == Reason::unknown ? " is not provisioned" : " is revoked")),
      reason_(reason),
      kind_(kind),
      identity_(std::move(identity)) {}

KeyStore::KeyStore(TokenContext& token, KeyDatabase& database, std::size_t cache_size,
                   std::size_t derived_cache_size)
    : token_(token),
      database_(database),
      capacity_(cache_size == 0 ? 1 : cache_size),
      generation_(token.pool().session_object_generation()),
      derived_(token.pool(), derived_cache_size) {
  token_.pool().on_fresh_instance(
      [this](hsm::Session& pinned, std::uint64_t generation, const std::stop_token& stop) {
        prepare_fresh_instance(pinned, generation, stop);
      });
}

KeyStore::~KeyStore() {
  token_.pool().on_fresh_instance({});  // waits for a prepare_fresh_instance() in progress
  clear();
}

void KeyStore::prepare_fresh_instance(hsm::Session& pinned, std::uint64_t generation,
                                      const std::stop_token& stop) {
  struct Wanted {
    std::string cache_key;
    IdentityKind kind;
    std::string identity;
    std::uint32_t version;
  };
  std::vector<Wanted> wanted;
  {
    std::lock_guard lock(mutex_);
    wanted.reserve(entries_.size());
    for (const std::string& key : lru_) {
      const Entry& entry = entries_.at(key);
      wanted.push_back(
          {key, kind_of_cache_key(key), key.substr(key.find('\n') + 1), entry.version});
    }
  }
  std::vector<Prepared> made;
  made.reserve(wanted.size());
  try {
    // The storage key as a token object of the fresh instance (a copy would be one more
    // object; SoftHSM, the token that recycles, refuses copies anyway).
    const hsm::KeyRef ref = storage_key_ref();
    hsm::AttributeTemplate match;
    match.set_ulong(CKA_CLASS, ref.object_class)
        .set_bool(CKA_TOKEN, true)
        .set_string(CKA_LABEL, ref.label);
    const std::optional<CK_OBJECT_HANDLE> storage = pinned.find_one(std::move(match));
    if (!storage) return;
    for (const Wanted& want : wanted) {
      if (stop.stop_requested()) break;  // the recycle is overdue: the rest fills on use
      const std::optional<IdentityRecord> record = database_.find(want.kind, want.identity);
      // Revoked, rotated or in token mode since: left to the next resolve().
      if (!record || record->status == KeyStatus::revoked || record->key_version != want.version ||
          record->mode != KeyStoreMode::wrapped) {
        continue;
      }
      made.push_back({want.cache_key, want.version,
                      unwrap_on(pinned, *storage, *record, children_of(want.kind), generation)});
    }
  } catch (const std::exception&) {
    // A token or database error: what was made so far is kept; the rest fills on use.
  }
  std::vector<Prepared> dropped;  // an earlier, never adopted preparation
  std::lock_guard lock(mutex_);
  dropped.swap(prepared_);
  prepared_ = std::move(made);
  prepared_generation_ = generation;
}

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
    const ChildKeys derive = children_of(kind);
    std::shared_ptr<const StoredKey> fresh = record->mode == KeyStoreMode::token
                                                 ? find_token_object(*record, derive)
                                                 : unwrap(*record, derive);
    insert(key, record->key_version, fresh);
    stored = std::move(fresh);
  }
  return ResolvedKey{std::move(stored), record->key_version, kind};
}

void KeyStore::follow_generation_locked(std::vector<std::shared_ptr<const StoredKey>>& dropped) {
  const std::uint64_t generation = token_.pool().session_object_generation();
  if (generation == generation_) return;
  // The session objects of the earlier generation are gone: so is everything cached.
  for (auto& [name, entry] : entries_) dropped.push_back(std::move(entry.key));
  entries_.clear();
  lru_.clear();
  dropped.push_back(std::move(master_copy_));
  generation_ = generation;
  // A fresh instance the store filled before the pool switched to it.
  if (generation != prepared_generation_) return;
  for (Prepared& prepared : prepared_) {
    if (entries_.size() >= capacity_) break;
    if (entries_.count(prepared.cache_key) != 0) continue;
    lru_.push_back(prepared.cache_key);  // most recent first, as prepared
    entries_.emplace(prepared.cache_key,
                     Entry{prepared.version, std::move(prepared.key), std::prev(lru_.end())});
    ++stats_.prewarmed;
  }
  // Beyond capacity: released by the caller, outside the lock (a destroy takes the pinned
  // session).
  for (Prepared& prepared : prepared_) {
    if (prepared.key) dropped.push_back(std::move(prepared.key));
  }
  prepared_.clear();
}

std::shared_ptr<const StoredKey> KeyStore::cached(const std::string& key, std::uint32_t version) {
  std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  follow_generation_locked(dropped);
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
  // The key's own generation decides, not the cache's: resolve() runs outside the caller's
  // pool operation, so a recycle may switch instances between this key's unwrap and here,
  // and another resolve() may already have moved the cache to the new generation. Kept,
  // such a key would hand out a dead handle of the old instance (or a number the new one
  // gave another object) to every later resolve() of its identity.
  follow_generation_locked(dropped);
  if (!stored->current()) {
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

std::shared_ptr<const StoredKey> KeyStore::unwrap(const IdentityRecord& record,
                                                  const ChildKeys& derive) {
  hsm::SessionPool& pool = token_.pool();
  return pool.run_pinned([&](hsm::Session& session) {
    const std::uint64_t generation = pool.session_object_generation();
    return unwrap_on(session, storage_key(session), record, derive, generation);
  });
}

std::shared_ptr<const StoredKey> KeyStore::unwrap_on(hsm::Session& session,
                                                     CK_OBJECT_HANDLE storage_key,
                                                     const IdentityRecord& record,
                                                     const ChildKeys& derive,
                                                     std::uint64_t generation) {
  hsm::SessionPool& pool = token_.pool();
  const TokenProfile& profile = token_.profile();
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  try {
    handle = unwrap_aes_key(
        session, profile, storage_key, record.wrapped_key,
        templates::root_key(profile, record.kind, record.identity, record.key_version, false));
  } catch (const hsm::Error& error) {
    if (error.recoverable()) throw;  // run_pinned recovers and runs the unwrap again
    throw error.with_context("unwrapping the stored key of " + std::string(kind_name(record.kind)) +
                             " " + record.identity + " v" + std::to_string(record.key_version));
  }
  if (!derive) return std::make_shared<const StoredKey>(&pool, handle, true, generation);
  // Only the children are kept: the root key goes as soon as they exist.
  const hsm::ObjectGuard root(session, handle);
  std::vector<CK_OBJECT_HANDLE> children = derive(session, root.get(), record.identity);
  return std::make_shared<const StoredKey>(&pool, CK_INVALID_HANDLE, false, generation,
                                           std::move(children));
}

CK_OBJECT_HANDLE KeyStore::storage_key(hsm::Session& pinned) {
  // As for M (master()): a token object's every use costs more than a session object's, on
  // NSS softoken with a database password a PBKDF2 decrypt of its value (about 3 ms per
  // cache miss without the copy). SoftHSM refuses (CKA_COPYABLE=FALSE): the token object.
  hsm::SessionPool& pool = token_.pool();
  const hsm::KeyRef ref = storage_key_ref();
  if (storage_copy_ && storage_copy_->current()) return storage_copy_->handle();
  if (storage_copy_refused_) return pool.resolve(pinned, ref);
  const std::uint64_t generation = pool.session_object_generation();
  const CK_OBJECT_HANDLE original = pool.resolve(pinned, ref);
  hsm::AttributeTemplate changes;
  changes.set_bool(CKA_TOKEN, false);  // every other attribute stays as the storage key has it
  try {
    // An earlier generation's copy is gone already: replacing it destroys nothing.
    storage_copy_ = std::make_shared<const StoredKey>(
        &pool, pinned.copy_object(original, std::move(changes)), true, generation);
  } catch (const hsm::Error& error) {
    if (error.recoverable()) throw;  // run_pinned recovers and runs the unwrap again
    storage_copy_refused_ = true;    // e.g. CKR_ACTION_PROHIBITED for CKA_COPYABLE=FALSE
    return original;
  }
  {
    std::lock_guard lock(mutex_);
    stats_.storage_copy = true;
  }
  return storage_copy_->handle();
}

std::shared_ptr<const StoredKey> KeyStore::find_token_object(const IdentityRecord& record,
                                                             const ChildKeys& derive) {
  hsm::SessionPool& pool = token_.pool();
  const hsm::KeyRef ref = root_key_ref(record.kind, record.identity, record.key_version);
  // On the pinned session: the caller may already hold a pooled session, and taking a
  // second one from a busy pool could wait for ever. Token objects are not destroyed by the
  // store; the handle is the pool's cached one.
  return pool.run_pinned([&](hsm::Session& session) {
    const std::uint64_t generation = pool.session_object_generation();
    const CK_OBJECT_HANDLE handle = pool.resolve(session, ref);
    std::vector<CK_OBJECT_HANDLE> children;
    if (derive) children = derive(session, handle, record.identity);
    return std::make_shared<const StoredKey>(&pool, handle, false, generation, std::move(children));
  });
}

ChildKeys KeyStore::children_of(IdentityKind kind) const {
  std::lock_guard lock(mutex_);
  return children_[static_cast<std::size_t>(kind)];
}

void KeyStore::keep_children(IdentityKind kind, ChildKeys derive) {
  {
    std::lock_guard lock(mutex_);
    children_[static_cast<std::size_t>(kind)] = std::move(derive);
  }
  clear();  // entries made without (or with other) children
}

std::shared_ptr<const StoredKey> KeyStore::master(hsm::Session& session) {
  hsm::SessionPool& pool = token_.pool();
  const hsm::KeyRef ref = master_key_ref();
  // The token object: the pool caches its handle (and re-finds it after a handle loss).
  const auto token_object = [&] {
    return std::make_shared<const StoredKey>(&pool, pool.resolve(session, ref), false, 0);
  };
  {
    std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
    std::unique_lock lock(mutex_);
    follow_generation_locked(dropped);
    if (master_copy_) return master_copy_;
    if (master_copy_refused_) {
      lock.unlock();
      return token_object();
    }
  }
  bool refused = false;
  std::uint64_t copy_generation = 0;
  std::shared_ptr<const StoredKey> copy = pool.run_pinned([&](hsm::Session& pinned) {
    copy_generation = pool.session_object_generation();
    const CK_OBJECT_HANDLE original = pool.resolve(pinned, ref);
    hsm::AttributeTemplate changes;
    changes.set_bool(CKA_TOKEN, false);  // every other attribute stays as M has it
    try {
      const CK_OBJECT_HANDLE handle = pinned.copy_object(original, std::move(changes));
      return std::make_shared<const StoredKey>(&pool, handle, true, copy_generation);
    } catch (const hsm::Error& error) {
      if (error.recoverable()) throw;  // run_pinned recovers and runs this again
      refused = true;                  // e.g. CKR_ACTION_PROHIBITED for CKA_COPYABLE=FALSE
      return std::shared_ptr<const StoredKey>();
    }
  });
  if (refused) {
    std::lock_guard lock(mutex_);
    master_copy_refused_ = true;
  } else {
    std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
    std::lock_guard lock(mutex_);
    follow_generation_locked(dropped);
    // Kept only while its generation is the current one (else it is dead already); another
    // thread's copy made meanwhile is replaced.
    if (copy_generation == generation_) {
      dropped.push_back(std::exchange(master_copy_, copy));
      stats_.master_copy = true;
    }
  }
  return refused ? token_object() : copy;
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
