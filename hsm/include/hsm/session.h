// A move-only PKCS#11 session and the operations the KMS needs on it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hsm/attributes.h"
#include "hsm/mechanism.h"
#include "hsm/module.h"
#include "hsm/secure_bytes.h"

namespace hsm {

class Session {
 public:
  // Opens a serial session on the slot: read/write, or read-only (no token object can be
  // created, modified or destroyed in it; session objects can, PKCS#11 section 5.6).
  Session(std::shared_ptr<Module> module, CK_SLOT_ID slot, bool read_write = true);
  ~Session();  // C_CloseSession (errors ignored: the session may already be gone)
  Session(Session&& other) noexcept;
  Session& operator=(Session&& other) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  CK_SESSION_HANDLE handle() const noexcept { return handle_; }
  CK_SLOT_ID slot() const noexcept { return slot_; }
  Module& module() const noexcept { return *module_; }
  std::uint64_t generation() const noexcept { return generation_; }  // module generation

  // C_GetSessionInfo; false if the token no longer knows this session.
  bool valid() const;
  CK_STATE state() const;
  // C_Login; CKR_USER_ALREADY_LOGGED_IN counts as success.
  void login(CK_USER_TYPE user, const SecureString& pin);

  // Object search, C_FindObjectsInit..Final in one call (the find is finalised on error).
  std::vector<CK_OBJECT_HANDLE> find(AttributeTemplate match, std::size_t max_objects = 4096);
  std::optional<CK_OBJECT_HANDLE> find_one(AttributeTemplate match);  // throws if several

  CK_OBJECT_HANDLE generate_key(Mechanism& mechanism, AttributeTemplate attributes);
  CK_OBJECT_HANDLE create_object(AttributeTemplate attributes);
  CK_OBJECT_HANDLE copy_object(CK_OBJECT_HANDLE object, AttributeTemplate changes);
  CK_OBJECT_HANDLE derive_key(Mechanism& mechanism, CK_OBJECT_HANDLE base,
                              AttributeTemplate attributes);
  CK_OBJECT_HANDLE unwrap_key(Mechanism& mechanism, CK_OBJECT_HANDLE unwrapping_key,
                              ByteView wrapped, AttributeTemplate attributes);
  // Returns exactly the wrapped bytes. One C_WrapKey into a generous buffer rather than a
  // size query first (SoftHSM wraps twice for that, and NSS's size query is too small for
  // CKM_AES_KEY_WRAP_KWP); CKR_BUFFER_TOO_SMALL is retried with a bigger buffer.
  Bytes wrap_key(Mechanism& mechanism, CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key);
  Bytes encrypt(Mechanism& mechanism, CK_OBJECT_HANDLE key, ByteView plaintext);
  // The output buffer holds ciphertext + tag (SoftHSM needs it for GCM).
  SecureBytes decrypt(Mechanism& mechanism, CK_OBJECT_HANDLE key, ByteView ciphertext);
  void destroy(CK_OBJECT_HANDLE object);

  Bytes get_bytes(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
  CK_ULONG get_ulong(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
  bool get_bool(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
  std::string get_string(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
  void set_attributes(CK_OBJECT_HANDLE object, AttributeTemplate attributes);

 private:
  void close() noexcept;
  std::shared_ptr<Module> module_;
  CK_SLOT_ID slot_ = 0;
  CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
  std::uint64_t generation_ = 0;
};

// Destroys a created object when it goes out of scope, unless released: a half-built
// result (e.g. wrap failed after derive) never leaks a key object.
class ObjectGuard {
 public:
  ObjectGuard() = default;
  ObjectGuard(Session& session, CK_OBJECT_HANDLE object) : session_(&session), object_(object) {}
  ~ObjectGuard();
  ObjectGuard(ObjectGuard&& other) noexcept;
  ObjectGuard& operator=(ObjectGuard&& other) noexcept;
  ObjectGuard(const ObjectGuard&) = delete;
  ObjectGuard& operator=(const ObjectGuard&) = delete;

  CK_OBJECT_HANDLE get() const noexcept { return object_; }
  CK_OBJECT_HANDLE release() noexcept;

 private:
  Session* session_ = nullptr;
  CK_OBJECT_HANDLE object_ = CK_INVALID_HANDLE;
};

}  // namespace hsm
