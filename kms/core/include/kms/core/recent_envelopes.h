// A bounded memory of the envelopes this node's registry admitted lately: envelope digest ->
// the request digest that used it. It lets the key-request service refuse a replay before
// any token work (a replayed envelope costs a hash and a lookup, not two decrypts). A hit
// is certain (an admitted envelope stays used until its window passes, and a request out
// of its window is refused as stale first); a miss proves nothing: the registry's check in
// the admission's transaction stays the one that decides, on every node.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "kms/services.h"

namespace kms {

class RecentEnvelopes {
 public:
  explicit RecentEnvelopes(std::size_t capacity) : capacity_(capacity) {}

  // After the admission's COMMIT: the oldest entry gives way beyond the capacity.
  void remember(const Bytes& envelope_digest, const Bytes& request_digest) {
    if (capacity_ == 0) return;
    std::string key(envelope_digest.begin(), envelope_digest.end());
    std::lock_guard lock(mutex_);
    const auto [it, inserted] =
        used_by_.try_emplace(key, request_digest.begin(), request_digest.end());
    if (!inserted) return;
    order_.push_back(std::move(key));
    if (order_.size() > capacity_) {
      used_by_.erase(order_.front());
      order_.pop_front();
    }
  }

  std::optional<Bytes> used_by(const Bytes& envelope_digest) const {
    const std::string key(envelope_digest.begin(), envelope_digest.end());
    std::lock_guard lock(mutex_);
    const auto it = used_by_.find(key);
    if (it == used_by_.end()) return std::nullopt;
    return Bytes(it->second.begin(), it->second.end());
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return used_by_.size();
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::string> used_by_;
  std::deque<std::string> order_;  // oldest first
};

}  // namespace kms
