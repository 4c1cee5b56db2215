#include "tokens/stored_key.h"

#include <utility>

namespace tokens {

StoredKey::StoredKey(hsm::SessionPool* pool, CK_OBJECT_HANDLE handle, bool owned,
                     std::uint64_t generation, std::vector<CK_OBJECT_HANDLE> children)
    : pool_(pool),
      handle_(handle),
      owned_(owned),
      generation_(generation),
      children_(std::move(children)) {}

bool StoredKey::current() const noexcept {
  return pool_->session_object_generation() == generation_;
}

StoredKey::~StoredKey() {
  // A handle from an earlier generation is dead already, and the number may have been
  // reused by the token for another object: never destroy it then.
  if ((!owned_ && children_.empty()) || pool_->session_object_generation() != generation_) return;
  try {
    pool_->run_pinned([this](hsm::Session& session) {
      if (pool_->session_object_generation() != generation_) return 0;
      for (const CK_OBJECT_HANDLE child : children_) session.destroy(child);
      if (owned_) session.destroy(handle_);
      return 0;
    });
  } catch (...) {  // the objects die with the pinned session at the latest
  }
}

}  // namespace tokens
