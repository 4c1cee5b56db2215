#include "hsm/session.h"

#include <algorithm>
#include <utility>

#include "call.h"
#include "hsm/error.h"

namespace hsm {
namespace {

std::string handle_context(const char* what, CK_OBJECT_HANDLE object) {
  return std::string(what) + " " + std::to_string(object);
}

std::string mechanism_context(const Mechanism& mechanism, CK_OBJECT_HANDLE key) {
  return mechanism_name(mechanism.type()) + ", key " + std::to_string(key);
}

// A call on this session's handle. The generation is checked under the call guard: after a
// re-initialisation the old handle number may belong to a new session, so it must never
// reach the library.
template <class Fn, class... Args>
CK_RV session_call(const Module& module, std::uint64_t generation, const char* function, Fn fn,
                   Args... args) {
  const auto guard = module.call_guard();
  if (module.generation() != generation) return CKR_SESSION_HANDLE_INVALID;
  return detail::observed(function, fn, args...);
}

}  // namespace

#define SESSION_CALL(fn, ...)                                        \
  session_call(*module_, generation_, #fn, module_->functions()->fn, \
               handle_ __VA_OPT__(, ) __VA_ARGS__)

Session::Session(std::shared_ptr<Module> module, CK_SLOT_ID slot, bool read_write)
    : module_(std::move(module)), slot_(slot) {
  const CK_FLAGS flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
  CK_RV rv;
  {
    // The generation is read under the call guard, so it is the one the handle belongs to.
    const auto guard = module_->call_guard();
    generation_ = module_->generation();
    rv = detail::observed("C_OpenSession", module_->functions()->C_OpenSession, slot_, flags,
                          nullptr, nullptr, &handle_);
  }
  if (rv != CKR_OK) handle_ = CK_INVALID_HANDLE;
  check(rv, "C_OpenSession",
        std::string(read_write ? "read/write" : "read-only") + " session on slot " +
            std::to_string(slot_));
}

Session::~Session() { close(); }

Session::Session(Session&& other) noexcept
    : module_(std::move(other.module_)),
      slot_(other.slot_),
      handle_(std::exchange(other.handle_, CK_INVALID_HANDLE)),
      generation_(other.generation_) {}

Session& Session::operator=(Session&& other) noexcept {
  if (this != &other) {
    close();
    module_ = std::move(other.module_);
    slot_ = other.slot_;
    handle_ = std::exchange(other.handle_, CK_INVALID_HANDLE);
    generation_ = other.generation_;
  }
  return *this;
}

void Session::close() noexcept {
  if (handle_ == CK_INVALID_HANDLE || !module_) return;
  // Skipped after a re-initialisation: the number may belong to someone else's session.
  SESSION_CALL(C_CloseSession);
  handle_ = CK_INVALID_HANDLE;
}

bool Session::valid() const {
  if (handle_ == CK_INVALID_HANDLE) return false;
  CK_SESSION_INFO info{};
  return SESSION_CALL(C_GetSessionInfo, &info) == CKR_OK;
}

CK_STATE Session::state() const {
  CK_SESSION_INFO info{};
  check(SESSION_CALL(C_GetSessionInfo, &info), "C_GetSessionInfo",
        handle_context("session", handle_));
  return info.state;
}

void Session::login(CK_USER_TYPE user, const SecureString& pin) {
  // C_Login does not modify the PIN; the cast is what the C API wants.
  auto* pin_bytes = reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.value().data()));
  const CK_RV rv =
      SESSION_CALL(C_Login, user, pin_bytes, static_cast<CK_ULONG>(pin.value().size()));
  if (rv == CKR_USER_ALREADY_LOGGED_IN) return;
  check(rv, "C_Login",
        std::string(user == CKU_SO ? "security officer" : "user") + " on slot " +
            std::to_string(slot_));
}

std::vector<CK_OBJECT_HANDLE> Session::find(AttributeTemplate match, std::size_t max_objects) {
  check(SESSION_CALL(C_FindObjectsInit, match.data(), match.size()), "C_FindObjectsInit");
  std::vector<CK_OBJECT_HANDLE> result;
  CK_RV rv = CKR_OK;
  while (result.size() < max_objects) {
    CK_OBJECT_HANDLE batch[64];
    CK_ULONG count = 0;
    const CK_ULONG wanted =
        static_cast<CK_ULONG>(std::min<std::size_t>(64, max_objects - result.size()));
    rv = SESSION_CALL(C_FindObjects, batch, wanted, &count);
    if (rv != CKR_OK || count == 0) break;
    result.insert(result.end(), batch, batch + count);
  }
  SESSION_CALL(C_FindObjectsFinal);  // always end the search
  check(rv, "C_FindObjects");
  return result;
}

std::optional<CK_OBJECT_HANDLE> Session::find_one(AttributeTemplate match) {
  const auto found = find(std::move(match), 2);
  if (found.empty()) return std::nullopt;
  if (found.size() > 1) {
    throw Error(ErrorKind::not_unique, "Session::find_one",
                "more than one object matches, expected exactly one");
  }
  return found.front();
}

CK_OBJECT_HANDLE Session::generate_key(Mechanism& mechanism, AttributeTemplate attributes) {
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  check(SESSION_CALL(C_GenerateKey, mechanism.get(), attributes.data(), attributes.size(), &key),
        "C_GenerateKey", mechanism_name(mechanism.type()));
  module_->count_created_object();
  return key;
}

CK_OBJECT_HANDLE Session::create_object(AttributeTemplate attributes) {
  CK_OBJECT_HANDLE object = CK_INVALID_HANDLE;
  check(SESSION_CALL(C_CreateObject, attributes.data(), attributes.size(), &object),
        "C_CreateObject");
  module_->count_created_object();
  return object;
}

CK_OBJECT_HANDLE Session::copy_object(CK_OBJECT_HANDLE object, AttributeTemplate changes) {
  CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
  check(SESSION_CALL(C_CopyObject, object, changes.data(), changes.size(), &copy), "C_CopyObject",
        handle_context("object", object));
  module_->count_created_object();
  return copy;
}

CK_OBJECT_HANDLE Session::derive_key(Mechanism& mechanism, CK_OBJECT_HANDLE base,
                                     AttributeTemplate attributes) {
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  check(
      SESSION_CALL(C_DeriveKey, mechanism.get(), base, attributes.data(), attributes.size(), &key),
      "C_DeriveKey", mechanism_context(mechanism, base));
  module_->count_created_object();
  return key;
}

CK_OBJECT_HANDLE Session::unwrap_key(Mechanism& mechanism, CK_OBJECT_HANDLE unwrapping_key,
                                     ByteView wrapped, AttributeTemplate attributes) {
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  check(SESSION_CALL(C_UnwrapKey, mechanism.get(), unwrapping_key,
                     const_cast<CK_BYTE_PTR>(wrapped.data()), static_cast<CK_ULONG>(wrapped.size()),
                     attributes.data(), attributes.size(), &key),
        "C_UnwrapKey", mechanism_context(mechanism, unwrapping_key));
  module_->count_created_object();
  return key;
}

Bytes Session::wrap_key(Mechanism& mechanism, CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key) {
  const std::string context = mechanism_context(mechanism, wrapping_key);
  // No size query first: SoftHSM performs the whole wrap to answer it (twice the cost), and
  // NSS answers it with less than it writes for CKM_AES_KEY_WRAP_KWP. Secret keys wrap into
  // far less than this; bigger keys take the CKR_BUFFER_TOO_SMALL path.
  Bytes wrapped(512);
  for (int attempt = 0;; ++attempt) {
    CK_ULONG length = static_cast<CK_ULONG>(wrapped.size());
    const CK_RV rv =
        SESSION_CALL(C_WrapKey, mechanism.get(), wrapping_key, key, wrapped.data(), &length);
    if (rv == CKR_BUFFER_TOO_SMALL && attempt < 2) {
      // Round up and add slack: the reported size may be too small (NSS, see above).
      wrapped.resize(std::max<std::size_t>((length + 15) / 8 * 8 + 16, wrapped.size() * 2));
      continue;
    }
    check(rv, "C_WrapKey", context);
    wrapped.resize(length);  // exactly the wrapped bytes
    return wrapped;
  }
}

Bytes Session::encrypt(Mechanism& mechanism, CK_OBJECT_HANDLE key, ByteView plaintext) {
  const std::string context = mechanism_context(mechanism, key);
  check(SESSION_CALL(C_EncryptInit, mechanism.get(), key), "C_EncryptInit", context);
  // Room for a GCM tag or a padding block: one call in the common case.
  Bytes ciphertext(plaintext.size() + 32);
  for (int attempt = 0;; ++attempt) {
    CK_ULONG length = static_cast<CK_ULONG>(ciphertext.size());
    const CK_RV rv =
        SESSION_CALL(C_Encrypt, const_cast<CK_BYTE_PTR>(plaintext.data()),
                     static_cast<CK_ULONG>(plaintext.size()), ciphertext.data(), &length);
    if (rv == CKR_BUFFER_TOO_SMALL && attempt < 2) {  // the operation stays active
      ciphertext.resize(std::max<std::size_t>(length, ciphertext.size() * 2));
      continue;
    }
    check(rv, "C_Encrypt", context);
    ciphertext.resize(length);
    return ciphertext;
  }
}

SecureBytes Session::decrypt(Mechanism& mechanism, CK_OBJECT_HANDLE key, ByteView ciphertext) {
  const std::string context = mechanism_context(mechanism, key);
  check(SESSION_CALL(C_DecryptInit, mechanism.get(), key), "C_DecryptInit", context);
  // SoftHSM's GCM wants room for ciphertext + tag even though it writes less.
  SecureBytes plaintext(std::max<std::size_t>(ciphertext.size(), 16));
  for (int attempt = 0;; ++attempt) {
    CK_ULONG length = static_cast<CK_ULONG>(plaintext.size());
    const CK_RV rv =
        SESSION_CALL(C_Decrypt, const_cast<CK_BYTE_PTR>(ciphertext.data()),
                     static_cast<CK_ULONG>(ciphertext.size()), plaintext.data(), &length);
    if (rv == CKR_BUFFER_TOO_SMALL && attempt < 2) {
      plaintext.resize(std::max<std::size_t>(length, plaintext.size() * 2));
      continue;
    }
    check(rv, "C_Decrypt", context);
    plaintext.resize(length);
    return plaintext;
  }
}

void Session::destroy(CK_OBJECT_HANDLE object) {
  check(SESSION_CALL(C_DestroyObject, object), "C_DestroyObject", handle_context("object", object));
}

Bytes Session::get_bytes(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  const std::string context = handle_context("object", object);
  CK_ATTRIBUTE attribute{type, nullptr, 0};
  check(SESSION_CALL(C_GetAttributeValue, object, &attribute, 1UL), "C_GetAttributeValue", context);
  if (attribute.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
    throw Error(CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue", context);
  }
  Bytes value(attribute.ulValueLen);
  attribute.pValue = value.data();
  check(SESSION_CALL(C_GetAttributeValue, object, &attribute, 1UL), "C_GetAttributeValue", context);
  value.resize(attribute.ulValueLen);
  return value;
}

CK_ULONG Session::get_ulong(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CK_ULONG value = 0;
  CK_ATTRIBUTE attribute{type, &value, sizeof value};
  check(SESSION_CALL(C_GetAttributeValue, object, &attribute, 1UL), "C_GetAttributeValue",
        handle_context("object", object));
  return value;
}

bool Session::get_bool(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE attribute{type, &value, sizeof value};
  check(SESSION_CALL(C_GetAttributeValue, object, &attribute, 1UL), "C_GetAttributeValue",
        handle_context("object", object));
  return value != CK_FALSE;
}

std::string Session::get_string(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  const Bytes value = get_bytes(object, type);
  return std::string(value.begin(), value.end());
}

void Session::set_attributes(CK_OBJECT_HANDLE object, AttributeTemplate attributes) {
  check(SESSION_CALL(C_SetAttributeValue, object, attributes.data(), attributes.size()),
        "C_SetAttributeValue", handle_context("object", object));
}

ObjectGuard::~ObjectGuard() {
  if (session_ == nullptr || object_ == CK_INVALID_HANDLE) return;
  try {
    session_->destroy(object_);
  } catch (const Error&) {
    // The session or the object is already gone: nothing left to clean up.
  }
}

ObjectGuard::ObjectGuard(ObjectGuard&& other) noexcept
    : session_(std::exchange(other.session_, nullptr)),
      object_(std::exchange(other.object_, CK_INVALID_HANDLE)) {}

ObjectGuard& ObjectGuard::operator=(ObjectGuard&& other) noexcept {
  if (this != &other) {
    ObjectGuard discarded(std::move(*this));
    session_ = std::exchange(other.session_, nullptr);
    object_ = std::exchange(other.object_, CK_INVALID_HANDLE);
  }
  return *this;
}

CK_OBJECT_HANDLE ObjectGuard::release() noexcept {
  session_ = nullptr;
  return std::exchange(object_, CK_INVALID_HANDLE);
}

}  // namespace hsm
