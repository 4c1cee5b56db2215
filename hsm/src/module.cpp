#include "hsm/module.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <p11-kit/p11-kit.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "call.h"
#include "hsm/error.h"

namespace hsm {
namespace {

// Generation numbers of every instance in the process come from here: unique across
// instances (load_instance()), so comparing generations compares instances too.
std::atomic<std::uint64_t> g_last_generation{0};
std::uint64_t next_generation() noexcept { return g_last_generation.fetch_add(1) + 1; }

// Copies all of `from` into `to` in the kernel. False, with errno set, on failure.
bool copy_file_contents(int from, int to) {
  struct stat status {};
  if (::fstat(from, &status) != 0) return false;
  off_t offset = 0;
  while (offset < status.st_size) {
    const ssize_t sent =
        ::sendfile(to, from, &offset, static_cast<std::size_t>(status.st_size - offset));
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0) return false;
    if (sent == 0) break;  // shorter than fstat said: dlopen judges what arrived
  }
  return true;
}

}  // namespace

// One library's initialisation, shared by every Module loaded for it in this process.
struct Module::Shared {
  CK_FUNCTION_LIST* functions = nullptr;
  std::string library_path;
  std::optional<std::string> init_reserved;  // kept alive: pReserved points into it
  std::shared_mutex lifecycle;
  std::atomic<std::uint64_t> generation{next_generation()};
  std::atomic<std::uint64_t> objects_created{0};
  bool initialized = false;  // guarded by lifecycle (exclusive)
  bool owned = true;         // false: someone else initialised it; do not finalise at exit

  void initialize() {
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    args.pReserved = init_reserved ? init_reserved->data() : nullptr;
    const CK_RV rv = detail::observed("C_Initialize", functions->C_Initialize, &args);
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      // Someone outside hsm:: initialised it (e.g. a p11-kit managed load): use it as is,
      // and leave finalising it to them (reinitialize() still finalises: it must).
      initialized = true;
      owned = false;
      return;
    }
    check(rv, "C_Initialize", "module " + library_path);
    initialized = true;
  }

  void finalize() noexcept {
    if (!initialized) return;
    detail::observed("C_Finalize", functions->C_Finalize, nullptr);
    initialized = false;
  }

  ~Shared() {
    if (owned) finalize();
  }
};

namespace {

std::mutex g_registry_mutex;  // guards g_registry and initialisation/finalisation of libraries
std::map<CK_FUNCTION_LIST*, std::weak_ptr<Module::Shared>> g_registry;

bool is_path(const std::string& module) { return module.find('/') != std::string::npos; }

std::string take_p11kit_string(char* text) {
  if (text == nullptr) return {};
  std::string result(text);
  std::free(text);
  return result;
}

std::string strip_padding(const CK_UTF8CHAR* text, std::size_t size) {
  std::string result(reinterpret_cast<const char*>(text), size);
  const auto end = result.find_last_not_of(' ');
  result.erase(end == std::string::npos ? 0 : end + 1);
  return result;
}

// Loads a module configured for p11-kit by name; returns it with its x-init-reserved.
CK_FUNCTION_LIST* load_by_name(const std::string& name, std::optional<std::string>& reserved) {
  CK_FUNCTION_LIST** modules = p11_kit_modules_load(nullptr, P11_KIT_MODULE_UNMANAGED);
  if (modules == nullptr) {
    const char* message = p11_kit_message();
    throw Error(ErrorKind::module_load, "p11_kit_modules_load",
                std::string("loading p11-kit modules: ") + (message ? message : "unknown error"));
  }
  CK_FUNCTION_LIST* chosen = p11_kit_module_for_name(modules, name.c_str());
  std::string known;
  for (CK_FUNCTION_LIST** m = modules; *m != nullptr; ++m) {
    if (*m == chosen) continue;
    known += (known.empty() ? "" : ", ") + take_p11kit_string(p11_kit_module_get_name(*m));
    p11_kit_module_release(*m);
  }
  std::free(modules);
  if (chosen == nullptr) {
    throw Error(ErrorKind::not_found, "Module::load",
                "no p11-kit module named '" + name +
                    "' (configured: " + (known.empty() ? "none" : known) + ")");
  }
  if (char* option = p11_kit_config_option(chosen, "x-init-reserved")) {
    if (!reserved) reserved = option;  // the caller's explicit arguments win
    std::free(option);
  }
  return chosen;
}

}  // namespace

std::shared_ptr<Module> Module::load(const ModuleConfig& config) {
  if (config.module.empty()) {
    throw Error(ErrorKind::invalid_argument, "Module::load",
                "no module path or p11-kit module name given");
  }
  std::shared_ptr<Module> module(new Module());
  module->config_ = config;
  std::optional<std::string> reserved = config.init_reserved;
  if (is_path(config.module)) {
    module->functions_ = p11_kit_module_load(config.module.c_str(), P11_KIT_MODULE_UNMANAGED);
    if (module->functions_ == nullptr) {
      const char* message = p11_kit_message();
      throw Error(ErrorKind::module_load, "p11_kit_module_load",
                  "cannot load " + config.module + ": " + (message ? message : "unknown error"));
    }
    module->library_path_ = config.module;
  } else {
    module->functions_ = load_by_name(config.module, reserved);
    module->library_path_ = take_p11kit_string(p11_kit_module_get_filename(module->functions_));
    module->config_.init_reserved = reserved;
  }

  std::lock_guard lock(g_registry_mutex);
  auto& slot = g_registry[module->functions_];
  module->shared_ = slot.lock();
  if (module->shared_) {
    if (module->shared_->init_reserved != reserved) {
      const std::string path = module->library_path_;
      module->shared_.reset();
      p11_kit_module_release(module->functions_);
      module->functions_ = nullptr;
      throw Error(ErrorKind::invalid_argument, "Module::load",
                  path + " is already initialised in this process with other init arguments");
    }
    return module;
  }
  auto shared = std::make_shared<Shared>();
  shared->functions = module->functions_;
  shared->library_path = module->library_path_;
  shared->init_reserved = reserved;
  try {
    shared->initialize();
  } catch (...) {
    g_registry.erase(module->functions_);
    p11_kit_module_release(module->functions_);
    module->functions_ = nullptr;
    throw;
  }
  slot = shared;
  module->shared_ = std::move(shared);
  return module;
}

std::shared_ptr<Module> Module::load_instance(const ModuleConfig& config) {
  // The library's own file: a path, or what p11-kit has configured under that name.
  std::string original = config.module;
  ModuleConfig instance = config;
  if (!is_path(config.module)) {
    std::optional<std::string> reserved = config.init_reserved;
    CK_FUNCTION_LIST* named = load_by_name(config.module, reserved);
    original = take_p11kit_string(p11_kit_module_get_filename(named));
    p11_kit_module_release(named);
    instance.init_reserved = reserved;
  }
  const auto fail = [&](const std::string& what) {
    return Error(ErrorKind::module_load, "Module::load_instance",
                 "a separate instance of " + original + ": " + what);
  };
  const int source = ::open(original.c_str(), O_RDONLY | O_CLOEXEC);
  if (source < 0) throw fail(std::string("open: ") + std::strerror(errno));
  const int copy = ::memfd_create("kms-pkcs11-instance", MFD_CLOEXEC);
  if (copy < 0) {
    const int error = errno;
    ::close(source);
    throw fail(std::string("memfd_create: ") + std::strerror(error));
  }
  if (!copy_file_contents(source, copy)) {
    const int error = errno;
    ::close(source);
    ::close(copy);
    throw fail(std::string("copying the library: ") + std::strerror(error));
  }
  ::close(source);
  // Loaded with dlopen, not through p11-kit: p11-kit unloads an unmanaged module only once
  // every module it loaded is released, so retired instances would stay mapped for ever.
  const std::string name = "/proc/self/fd/" + std::to_string(copy);
  void* handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    ::close(copy);
    throw fail(std::string("dlopen: ") + (why ? why : "unknown error"));
  }
  CK_FUNCTION_LIST* functions = nullptr;
  const auto get_function_list =
      reinterpret_cast<CK_C_GetFunctionList>(::dlsym(handle, "C_GetFunctionList"));
  if (get_function_list == nullptr || get_function_list(&functions) != CKR_OK ||
      functions == nullptr) {
    ::dlclose(handle);
    ::close(copy);
    throw fail("C_GetFunctionList failed");
  }
  std::shared_ptr<Module> module(new Module());
  module->config_ = config;
  module->config_.init_reserved = instance.init_reserved;
  module->library_path_ = original;
  module->functions_ = functions;
  module->dl_handle_ = handle;  // from here the destructor unloads it and closes the copy
  module->instance_fd_ = copy;
  auto shared = std::make_shared<Shared>();
  shared->functions = functions;
  shared->library_path = original;
  shared->init_reserved = instance.init_reserved;
  shared->initialize();  // nobody shares this instance: no registry entry
  module->shared_ = std::move(shared);
  return module;
}

Module::~Module() {
  if (functions_ == nullptr) return;
  {
    std::lock_guard lock(g_registry_mutex);
    const bool last = shared_.use_count() == 1;
    shared_.reset();  // the last Module finalises the library here
    if (last) g_registry.erase(functions_);
  }
  if (dl_handle_ != nullptr) {
    ::dlclose(dl_handle_);  // load_instance(): unmaps this instance
  } else {
    p11_kit_module_release(functions_);
  }
  if (instance_fd_ >= 0) ::close(instance_fd_);
}

CK_INFO Module::info() const {
  CK_INFO info{};
  check(HSM_CALL(*this, C_GetInfo, &info), "C_GetInfo", library_path_);
  return info;
}

CK_TOKEN_INFO Module::token_info(CK_SLOT_ID slot) const {
  CK_TOKEN_INFO info{};
  check(HSM_CALL(*this, C_GetTokenInfo, slot, &info), "C_GetTokenInfo",
        "slot " + std::to_string(slot));
  return info;
}

std::string Module::description() const {
  const CK_INFO info = this->info();
  char version[64];
  std::snprintf(version, sizeof version, " %u.%u (Cryptoki %u.%u)", info.libraryVersion.major,
                info.libraryVersion.minor, info.cryptokiVersion.major, info.cryptokiVersion.minor);
  return strip_padding(info.manufacturerID, sizeof info.manufacturerID) + " " +
         strip_padding(info.libraryDescription, sizeof info.libraryDescription) + version + " [" +
         library_path_ + "]";
}

std::vector<TokenDescription> Module::tokens() const {
  std::vector<CK_SLOT_ID> slots;
  for (;;) {
    CK_ULONG count = 0;
    check(HSM_CALL(*this, C_GetSlotList, CK_TRUE, nullptr, &count), "C_GetSlotList", library_path_);
    slots.resize(count);
    const CK_RV rv = HSM_CALL(*this, C_GetSlotList, CK_TRUE, slots.data(), &count);
    if (rv == CKR_BUFFER_TOO_SMALL) continue;  // a token appeared in between
    check(rv, "C_GetSlotList", library_path_);
    slots.resize(count);
    break;
  }
  std::vector<TokenDescription> result;
  for (CK_SLOT_ID slot : slots) {
    TokenDescription token{};
    token.slot = slot;
    const CK_RV rv = HSM_CALL(*this, C_GetTokenInfo, slot, &token.info);
    if (rv == CKR_TOKEN_NOT_PRESENT) continue;  // removed since the slot list was read
    check(rv, "C_GetTokenInfo", "slot " + std::to_string(slot));
    token.label = strip_padding(token.info.label, sizeof token.info.label);
    token.manufacturer = strip_padding(token.info.manufacturerID, sizeof token.info.manufacturerID);
    token.model = strip_padding(token.info.model, sizeof token.info.model);
    token.serial = strip_padding(token.info.serialNumber, sizeof token.info.serialNumber);
    result.push_back(std::move(token));
  }
  return result;
}

std::vector<CK_MECHANISM_TYPE> Module::mechanisms(CK_SLOT_ID slot) const {
  const std::string context = "slot " + std::to_string(slot);
  for (;;) {
    CK_ULONG count = 0;
    check(HSM_CALL(*this, C_GetMechanismList, slot, nullptr, &count), "C_GetMechanismList",
          context);
    std::vector<CK_MECHANISM_TYPE> result(count);
    const CK_RV rv = HSM_CALL(*this, C_GetMechanismList, slot, result.data(), &count);
    if (rv == CKR_BUFFER_TOO_SMALL) continue;
    check(rv, "C_GetMechanismList", context);
    result.resize(count);
    return result;
  }
}

CK_MECHANISM_INFO Module::mechanism_info(CK_SLOT_ID slot, CK_MECHANISM_TYPE type) const {
  CK_MECHANISM_INFO info{};
  check(HSM_CALL(*this, C_GetMechanismInfo, slot, type, &info), "C_GetMechanismInfo",
        mechanism_name(type) + " on slot " + std::to_string(slot));
  return info;
}

std::uint64_t Module::reinitialize() { return reinitialize_if(generation()); }

std::uint64_t Module::reinitialize_if(std::uint64_t seen_generation) {
  std::unique_lock lock(shared_->lifecycle);  // waits for calls in flight to finish
  if (shared_->generation.load() != seen_generation) return shared_->generation.load();
  // Every session handle of the old generation is dead from here on, even if
  // C_Initialize fails (then the next call fails with CKR_CRYPTOKI_NOT_INITIALIZED and
  // recovery tries again).
  const std::uint64_t next = next_generation();
  shared_->generation.store(next);
  shared_->finalize();
  shared_->owned = true;
  shared_->initialize();
  return next;
}

std::uint64_t Module::generation() const noexcept { return shared_->generation.load(); }

std::uint64_t Module::objects_created() const noexcept {
  return shared_->objects_created.load(std::memory_order_relaxed);
}

void Module::count_created_object() noexcept {
  shared_->objects_created.fetch_add(1, std::memory_order_relaxed);
}

std::shared_lock<std::shared_mutex> Module::call_guard() const {
  return std::shared_lock(shared_->lifecycle);
}

std::string mechanism_name(CK_MECHANISM_TYPE type) {
  struct Name {
    CK_MECHANISM_TYPE type;
    const char* name;
  };
#define HSM_MECH(name) \
  { name, #name }
  static constexpr Name kNames[] = {
      HSM_MECH(CKM_AES_KEY_GEN),
      HSM_MECH(CKM_AES_ECB),
      HSM_MECH(CKM_AES_CBC),
      HSM_MECH(CKM_AES_CBC_PAD),
      HSM_MECH(CKM_AES_CTR),
      HSM_MECH(CKM_AES_GCM),
      HSM_MECH(CKM_AES_CCM),
      HSM_MECH(CKM_AES_CMAC),
      HSM_MECH(CKM_AES_CMAC_GENERAL),
      HSM_MECH(CKM_AES_KEY_WRAP),
      HSM_MECH(CKM_AES_KEY_WRAP_PAD),
      HSM_MECH(CKM_AES_KEY_WRAP_KWP),
      HSM_MECH(CKM_AES_ECB_ENCRYPT_DATA),
      HSM_MECH(CKM_AES_CBC_ENCRYPT_DATA),
      HSM_MECH(CKM_SP800_108_COUNTER_KDF),
      HSM_MECH(CKM_HKDF_DERIVE),
      HSM_MECH(CKM_GENERIC_SECRET_KEY_GEN),
      HSM_MECH(CKM_SHA256),
      HSM_MECH(CKM_SHA256_HMAC),
      HSM_MECH(CKM_SHA384_HMAC),
      HSM_MECH(CKM_SHA512_HMAC),
      HSM_MECH(CKM_RSA_PKCS),
      HSM_MECH(CKM_RSA_PKCS_KEY_PAIR_GEN),
      HSM_MECH(CKM_EC_KEY_PAIR_GEN),
      HSM_MECH(CKM_ECDSA),
      HSM_MECH(CKM_ECDH1_DERIVE),
  };
#undef HSM_MECH
  for (const auto& entry : kNames) {
    if (entry.type == type) return entry.name;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "CKM_0x%08lX", static_cast<unsigned long>(type));
  return buffer;
}

}  // namespace hsm
