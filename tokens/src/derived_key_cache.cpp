#include "tokens/derived_key_cache.h"

#include <openssl/evp.h>

#include <cstring>
#include <stdexcept>
#include <utility>

namespace tokens {

std::size_t DerivedKeyCache::DigestHash::operator()(const Digest& d) const noexcept {
  std::size_t h;  // a SHA-256 output: any 8 of its bytes are a good hash
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

DerivedKeyCache::Digest DerivedKeyCache::name(std::string_view label, hsm::ByteView context) {
  Digest digest{};
  const std::uint8_t label_size = static_cast<std::uint8_t>(label.size());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int length = 0;
  const bool ok = ctx != nullptr && label.size() < 256 &&
                  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, &label_size, 1) == 1 &&
                  EVP_DigestUpdate(ctx, label.data(), label.size()) == 1 &&
                  EVP_DigestUpdate(ctx, context.data(), context.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx, digest.data(), &length) == 1 && length == digest.size();
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("SHA-256 of a derivation's name failed");
  return digest;
}

DerivedKeyCache::DerivedKeyCache(hsm::SessionPool& pool, std::size_t capacity)
    : pool_(pool), capacity_(capacity), generation_(pool.session_object_generation()) {}

DerivedKeyCache::~DerivedKeyCache() { clear(); }

std::shared_ptr<const StoredKey> DerivedKeyCache::find_locked(
    const Digest& name, std::vector<std::shared_ptr<const StoredKey>>& dropped) {
  const std::uint64_t generation = pool_.session_object_generation();
  if (generation != generation_) {
    // The session objects of the earlier generation are gone: so is everything cached.
    for (auto& [digest, entry] : entries_) dropped.push_back(std::move(entry.key));
    entries_.clear();
    lru_.clear();
    generation_ = generation;
  }
  const auto found = entries_.find(name);
  if (found == entries_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, found->second.position);
  return found->second.key;
}

std::shared_ptr<const StoredKey> DerivedKeyCache::get(const Digest& name, const Derive& derive) {
  // Released outside the lock and outside run_pinned (a destroy takes the pinned session).
  std::vector<std::shared_ptr<const StoredKey>> dropped;
  {
    std::lock_guard lock(mutex_);
    if (std::shared_ptr<const StoredKey> hit = find_locked(name, dropped)) {
      ++stats_.hits;
      return hit;
    }
  }
  return pool_.run_pinned([&](hsm::Session& pinned) {
    // run_pinned serialises the misses: a thread that missed the same name before this one
    // got the pinned session has made and kept it.
    {
      std::lock_guard lock(mutex_);
      if (std::shared_ptr<const StoredKey> hit = find_locked(name, dropped)) {
        ++stats_.hits;
        return hit;
      }
    }
    const std::uint64_t generation = pool_.session_object_generation();
    hsm::ObjectGuard made(pinned, derive(pinned));
    auto key = std::make_shared<const StoredKey>(&pool_, made.get(), true, generation);
    made.release();
    std::lock_guard lock(mutex_);
    ++stats_.misses;
    find_locked(name, dropped);  // follows a generation change since the check above
    if (!key->current() || capacity_ == 0) return key;  // dead already, or the cache is off
    lru_.push_front(name);
    entries_.emplace(name, Entry{key, lru_.begin()});
    while (entries_.size() > capacity_) {
      const auto oldest = entries_.find(lru_.back());
      dropped.push_back(std::move(oldest->second.key));
      entries_.erase(oldest);
      lru_.pop_back();
      ++stats_.evictions;
    }
    return key;
  });
}

void DerivedKeyCache::clear() {
  std::vector<std::shared_ptr<const StoredKey>> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  for (auto& [digest, entry] : entries_) dropped.push_back(std::move(entry.key));
  entries_.clear();
  lru_.clear();
}

DerivedKeyCacheStats DerivedKeyCache::stats() const {
  std::lock_guard lock(mutex_);
  DerivedKeyCacheStats stats = stats_;
  // Entries of an earlier generation are dead (forgotten on the next get()).
  stats.cached = pool_.session_object_generation() == generation_ ? entries_.size() : 0;
  return stats;
}

}  // namespace tokens
