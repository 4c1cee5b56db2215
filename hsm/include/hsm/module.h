// A PKCS#11 module loaded through p11-kit and initialised with CKF_OS_LOCKING_OK.
//
// Several Module objects for the same library in one process share one initialisation
// (the library's function list is process-wide, and a second C_Initialize returns
// CKR_CRYPTOKI_ALREADY_INITIALIZED): the first load initialises, the last Module to die
// finalises, and reinitialize() acts for all of them (they share the generation). Loading
// the same library again with different init_reserved while it is live fails with
// ErrorKind::invalid_argument, because the library keeps its first arguments.
//
// load_instance() is the exception: a private copy of the library, initialised on its own
// and shared with nobody, so that a new instance can serve while an old one is finalised
// (SessionPool's overlapping recycle). Generation numbers are unique in the process, across
// instances, so a session of one instance never passes for a session of another.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "hsm/pkcs11.h"

namespace hsm {

struct ModuleConfig {
  // A path to a .so (contains '/'), or the name of a module configured for p11-kit
  // (/etc/pkcs11/modules/NAME.module).
  std::string module;
  // CK_C_INITIALIZE_ARGS.pReserved, e.g. NSS softoken's
  // "configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=".
  std::optional<std::string> init_reserved;
};

struct TokenDescription {
  CK_SLOT_ID slot;
  std::string label;         // blank padding stripped
  std::string manufacturer;  // blank padding stripped
  std::string model;
  std::string serial;
  CK_TOKEN_INFO info;  // raw, for URI matching
};

class Module {
 public:
  static std::shared_ptr<Module> load(const ModuleConfig& config);
  // A separate instance of the library: its .so copied into an anonymous file
  // (memfd_create) and loaded from there, so the dynamic loader maps it anew with its own
  // globals; C_Initialize'd on its own, with its own sessions, session objects and login.
  // Its C_Finalize (when the last Module of it dies) leaves every other instance alone.
  // library_path() still names the original. Throws ErrorKind::module_load when the copy
  // cannot be made or loaded (e.g. no memfd_create, or a policy that forbids mapping it).
  static std::shared_ptr<Module> load_instance(const ModuleConfig& config);
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  CK_FUNCTION_LIST* functions() const noexcept { return functions_; }
  const ModuleConfig& config() const noexcept { return config_; }
  std::string description() const;  // library description and version, for logs
  CK_INFO info() const;             // C_GetInfo, raw (e.g. for token quirk detection)

  // Slots that hold a token.
  std::vector<TokenDescription> tokens() const;
  CK_TOKEN_INFO token_info(CK_SLOT_ID slot) const;  // C_GetTokenInfo, raw (session limits)
  std::vector<CK_MECHANISM_TYPE> mechanisms(CK_SLOT_ID slot) const;
  CK_MECHANISM_INFO mechanism_info(CK_SLOT_ID slot, CK_MECHANISM_TYPE type) const;

  // C_Finalize + C_Initialize, after CKR_DEVICE_ERROR / CKR_TOKEN_NOT_PRESENT. Every
  // session of this module is gone afterwards. Returns the new generation number.
  std::uint64_t reinitialize();
  // Changed by every reinitialize() (to a number no instance in the process had before);
  // session handles and session-object handles from an earlier generation are dead.
  std::uint64_t generation() const noexcept;
  // reinitialize() unless another thread already did since seen_generation was read:
  // many threads hitting one device error re-initialise once. Returns the generation.
  std::uint64_t reinitialize_if(std::uint64_t seen_generation);

  // Held (shared) by every token call; reinitialize() takes it exclusively, because
  // C_Finalize while other threads are inside the library is undefined behaviour.
  std::shared_lock<std::shared_mutex> call_guard() const;

  // Objects created through this library's sessions (C_GenerateKey, C_CreateObject,
  // C_CopyObject, C_DeriveKey, C_UnwrapKey that succeeded), by every Module of it in the
  // process, since it was loaded. A token that never frees destroyed session objects grows
  // with this count until a re-initialisation (SessionPool::recycle()).
  std::uint64_t objects_created() const noexcept;
  void count_created_object() noexcept;  // called by Session

  // Where the module came from, for messages: the .so path.
  const std::string& library_path() const noexcept { return library_path_; }

  struct Shared;  // the initialisation shared by Modules of one library (module.cpp)

 private:
  Module() = default;

  ModuleConfig config_;
  std::string library_path_;
  CK_FUNCTION_LIST* functions_ = nullptr;  // p11-kit module handle (unmanaged)
  std::shared_ptr<Shared> shared_;
  // load_instance(): the anonymous copy, open while the instance is loaded, so no other
  // instance can be loaded under the same /proc/self/fd name meanwhile.
  int instance_fd_ = -1;
  void* dl_handle_ = nullptr;  // load_instance(): its dlopen handle
};

// "CKM_AES_GCM" for CKM_AES_GCM; also the 3.0 names used here.
std::string mechanism_name(CK_MECHANISM_TYPE type);

}  // namespace hsm
