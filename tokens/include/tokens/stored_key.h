// A key in the token that a cache of session-object handles hands out (tokens/key_store.h,
// tokens/derived_key_cache.h): a root key, the child keys kept for it, or a key derived
// once. Session objects are destroyed when the last holder releases them, unless the
// session objects they belonged to are already gone.
#pragma once

#include <cstdint>
#include <vector>

#include "hsm/session_pool.h"

namespace tokens {

class StoredKey {
 public:
  // owned: handle is a session object of this key (destroyed with it). children are always
  // session objects owned by this key.
  StoredKey(hsm::SessionPool* pool, CK_OBJECT_HANDLE handle, bool owned, std::uint64_t generation,
            std::vector<CK_OBJECT_HANDLE> children = {});
  ~StoredKey();
  StoredKey(const StoredKey&) = delete;
  StoredKey& operator=(const StoredKey&) = delete;
  // The root key; CK_INVALID_HANDLE for a wrapped root key that was destroyed once its
  // children were derived.
  CK_OBJECT_HANDLE handle() const noexcept { return handle_; }
  // The i-th key returned by the kind's ChildKeys (i < child_count()).
  CK_OBJECT_HANDLE child(std::size_t i) const { return children_.at(i); }
  std::size_t child_count() const noexcept { return children_.size(); }
  // Its session objects (and cached handles) are still those of the pool's current
  // session-object generation: false once they may be gone, or their numbers reused.
  bool current() const noexcept;

 private:
  hsm::SessionPool* pool_;
  CK_OBJECT_HANDLE handle_;
  bool owned_;
  std::uint64_t generation_;
  std::vector<CK_OBJECT_HANDLE> children_;
};

}  // namespace tokens
