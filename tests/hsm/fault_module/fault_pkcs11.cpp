// kms_fault_pkcs11: a PKCS#11 module for tests only. It forwards every call to the real
// module named by the environment variable KMS_FAULT_TARGET (a .so path, dlopen'ed at the
// first C_GetFunctionList) and can, on command, fail calls or make the token disappear,
// to produce faults a software token cannot produce on demand.
//
// CONTROL API (extern "C", for a test process that loaded this module in-process; get the
// functions with dlopen(path, RTLD_NOW | RTLD_NOLOAD) + dlsym, see fault_control.h):
//   void kms_fault_fail_next(const char* function, CK_RV rv, int count)
//       the next `count` calls of `function` ("C_Decrypt") fail with rv, without reaching
//       the real module. "*" means any call except C_Initialize, C_Finalize, C_GetInfo and
//       C_GetFunctionList. Exception, for fidelity: a failed single-part or final call
//       (C_Encrypt, C_Decrypt, C_*Final, C_Digest, C_Sign, C_Verify) terminates the active
//       operation in PKCS#11, so those are forwarded (their result discarded) before the
//       injected rv is returned; otherwise the real session would keep an operation
//       active that no real token keeps.
//   void kms_fault_fail_until_reinitialized(CK_RV rv)
//       every call ("*" above) fails with rv until the application calls C_Finalize and
//       C_Initialize again: a device that stays broken until re-initialised.
//   void kms_fault_set_token_present(int present)
//       0: the token is "removed": all sessions are closed in the real module (login is
//       lost, session objects die) and every call except C_Initialize, C_Finalize,
//       C_GetInfo, C_GetFunctionList and C_GetSlotList fails with CKR_TOKEN_NOT_PRESENT.
//       1: the token is back (as after re-insertion: no sessions, not logged in).
//   void kms_fault_close_all_sessions(void)
//       C_CloseAllSessions on every slot of the real module, behind the application's back.
//   void kms_fault_limit_sessions(unsigned long max)
//       a token that allows `max` sessions (0: no limit, the default): C_GetTokenInfo reports
//       ulMaxSessionCount = ulMaxRwSessionCount = max, and C_OpenSession fails with
//       CKR_SESSION_COUNT (without reaching the real module) while the application holds
//       `max` sessions opened through this module.
//   void kms_fault_clear(void)             drops every armed fault and the session limit;
//                                          the token is present.
//   unsigned long kms_fault_call_count(const char* function)
//       calls of `function` seen so far ("*": all), including failed ones.
//   void kms_fault_delay(const char* function, unsigned milliseconds)
//       every later call of `function` (an exact name) sleeps this long before it is
//       forwarded (a slow device; 0 removes the delay). The sleep holds no lock of this
//       module, so concurrent calls are delayed concurrently, as on a device with several
//       sessions in flight.
//
// A delay in progress ends early when the function's delay is lowered meanwhile (by
// kms_fault_delay or the delay file below) to no more than the time already slept: a test
// can hold calls with a long delay and release them when it wants.
//
// DELAYS AND FAULTS FROM ANOTHER PROCESS (the application under test is not the test process):
//   KMS_FAULT_DELAY="C_Decrypt=1500,C_DeriveKey=200" read when the target is loaded.
//   KMS_FAULT_DELAY_FILE=<file>: the file is checked at every call (and every 10 ms of a
//   delay) and, when it changed (inode, size or mtime), its entries replace all delays and
//   file faults; a missing file means none. Entries (commas, spaces or newlines between):
//     C_Decrypt=1500         every call of C_Decrypt sleeps 1500 ms first
//     fail:C_Decrypt=0x30    every call of C_Decrypt fails with this CK_RV (decimal or 0x
//                            hex) while the file says so; "fail:*=..." fails any call, as
//                            "*" in kms_fault_fail_next
//     token=absent           the token is removed while the file says so, as
//                            kms_fault_set_token_present(0) (sessions closed when it is
//                            first seen), and back when the entry goes
//   Write it with a rename so that a call never reads half a file.
//
// CALL RECORD: when KMS_PKCS11_RECORD=<file> is set when the target is loaded, one
// line per call is appended to <file> (O_APPEND, so several processes may share it):
//   <function>[ mech=0x<hex>][ attrs=0x<hex>,0x<hex>,...] rv=0x<hex>\n
// mech: the CK_MECHANISM type of the call, when it takes one (C_DecryptInit, C_DeriveKey,
// C_WrapKey, C_UnwrapKey, C_GenerateKey, ...). attrs: the attribute TYPES of the call's
// template, in order (C_GetAttributeValue, C_SetAttributeValue, C_CreateObject,
// C_CopyObject, C_FindObjectsInit, C_GenerateKey, C_DeriveKey, C_UnwrapKey; only the
// first template for C_GenerateKeyPair). rv: what the application got back. Attribute
// values, data and PINs are never written. Examples:
//   C_DecryptInit mech=0x1087 rv=0x0
//   C_GetAttributeValue attrs=0x11 rv=0x11
//   C_CreateObject attrs=0x0,0x100,0x1,0x103,0x162,0x11,0x104 rv=0x0
// So "the server never read a key value" is: no C_GetAttributeValue line lists 0x11
// (CKA_VALUE); "never created a key with a known value": no C_CreateObject or
// C_UnwrapKey... line pairs class 0x0 with value 0x11.
#include <dlfcn.h>
#include <fcntl.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

std::mutex g_mutex;  // guards everything below except the atomics
CK_FUNCTION_LIST* g_real = nullptr;
CK_FUNCTION_LIST g_list{};
bool g_list_ready = false;
int g_record_fd = -1;

struct Armed {
  CK_RV rv = CKR_OK;
  int count = 0;
};
std::map<std::string, Armed> g_armed;  // function name or "*"
CK_RV g_until_reinit = CKR_OK;
bool g_token_present = true;
std::map<std::string, unsigned long> g_counts;
std::atomic<bool> g_faults_active{false};      // nothing armed: skip the fault lookups
std::map<std::string, unsigned> g_delays_ms;   // exact function name -> sleep before forwarding
std::map<std::string, CK_RV> g_file_failures;  // "fail:" entries of the delay file
bool g_file_token_absent = false;              // "token=absent" in the delay file
unsigned long g_session_limit = 0;             // kms_fault_limit_sessions; 0: none
unsigned long g_open_sessions = 0;             // opened through this module, not yet closed

// KMS_FAULT_DELAY_FILE and what it looked like when it was last read.
std::string g_delay_file;
struct FileStamp {
  ino_t inode = 0;
  off_t size = -1;
  timespec modified{};
  bool operator==(const FileStamp& other) const {
    return inode == other.inode && size == other.size && modified.tv_sec == other.modified.tv_sec &&
           modified.tv_nsec == other.modified.tv_nsec;
  }
};
FileStamp g_delay_file_stamp;

struct Control {
  std::map<std::string, unsigned> delays;
  std::map<std::string, CK_RV> failures;
  bool token_absent = false;
};

// "C_Decrypt=1500,fail:C_Sign=0x30 token=absent" (commas, spaces or newlines between entries).
Control parse_control(std::string text, const char* source) {
  for (char& c : text) {
    if (c == ',') c = ' ';
  }
  Control control;
  std::istringstream entries(text);
  for (std::string entry; entries >> entry;) {
    const auto equals = entry.find('=');
    try {
      if (equals == std::string::npos || equals == 0) throw std::invalid_argument(entry);
      const std::string name = entry.substr(0, equals);
      const std::string value = entry.substr(equals + 1);
      if (name == "token") {
        if (value != "absent") throw std::invalid_argument(entry);
        control.token_absent = true;
      } else if (name.rfind("fail:", 0) == 0 && name.size() > 5) {
        control.failures[name.substr(5)] = static_cast<CK_RV>(std::stoul(value, nullptr, 0));
      } else {
        control.delays[name] = static_cast<unsigned>(std::stoul(value));
      }
    } catch (const std::exception&) {
      std::fprintf(stderr,
                   "kms_fault_pkcs11: %s: ignored \"%s\" (want FUNCTION=MILLISECONDS, "
                   "fail:FUNCTION=CKR or token=absent)\n",
                   source, entry.c_str());
    }
  }
  return control;
}

void close_all_real_sessions();
void refresh_active_locked();

// Re-reads KMS_FAULT_DELAY_FILE when it changed since the last call.
void poll_delay_file_locked() {
  if (g_delay_file.empty()) return;
  FileStamp stamp;
  struct stat info {};
  if (::stat(g_delay_file.c_str(), &info) == 0) {
    stamp = FileStamp{info.st_ino, info.st_size, info.st_mtim};
  }
  if (stamp == g_delay_file_stamp) return;
  g_delay_file_stamp = stamp;
  std::ostringstream text;
  if (stamp.size >= 0) text << std::ifstream(g_delay_file).rdbuf();
  Control control = parse_control(text.str(), g_delay_file.c_str());
  g_delays_ms = std::move(control.delays);
  g_file_failures = std::move(control.failures);
  if (control.token_absent && !g_file_token_absent && g_real != nullptr) close_all_real_sessions();
  g_file_token_absent = control.token_absent;
  refresh_active_locked();
}

bool exempt_from_star(const std::string& name) {
  return name == "C_Initialize" || name == "C_Finalize" || name == "C_GetInfo" ||
         name == "C_GetFunctionList";
}

void refresh_active_locked() {
  bool active = g_until_reinit != CKR_OK || !g_token_present || g_file_token_absent ||
                !g_file_failures.empty();
  for (const auto& [name, armed] : g_armed) active = active || armed.count > 0;
  g_faults_active.store(active);
}

// The CK_RV armed for this call (consuming it), or CKR_OK.
CK_RV injected_rv_locked(const std::string& name) {
  if (!g_faults_active.load()) return CKR_OK;
  if (name == "C_Initialize" && g_until_reinit != CKR_OK) {
    g_until_reinit = CKR_OK;  // the application re-initialised: the device is back
    refresh_active_locked();
  }
  for (const std::string& key : {name, std::string("*")}) {
    if (key == "*" && exempt_from_star(name)) continue;
    auto armed = g_armed.find(key);
    if (armed != g_armed.end() && armed->second.count > 0) {
      --armed->second.count;
      const CK_RV rv = armed->second.rv;
      refresh_active_locked();
      return rv;
    }
  }
  for (const std::string& key : {name, std::string("*")}) {
    if (key == "*" && exempt_from_star(name)) continue;
    const auto failure = g_file_failures.find(key);
    if (failure != g_file_failures.end()) return failure->second;
  }
  if (g_until_reinit != CKR_OK && !exempt_from_star(name)) return g_until_reinit;
  if ((!g_token_present || g_file_token_absent) && !exempt_from_star(name) &&
      name != "C_GetSlotList") {
    return CKR_TOKEN_NOT_PRESENT;
  }
  return CKR_OK;
}

struct Injection {
  CK_RV rv = CKR_OK;  // CKR_OK: forward the call
  unsigned delay_ms = 0;
};

// Counts the call; returns the delay and the injected CK_RV (CKR_OK: forward it).
Injection injected(const char* function) {
  std::lock_guard lock(g_mutex);
  const std::string name(function);
  ++g_counts[name];
  ++g_counts["*"];
  poll_delay_file_locked();
  const auto delay = g_delays_ms.find(name);
  return {injected_rv_locked(name), delay == g_delays_ms.end() ? 0u : delay->second};
}

// Sleeps before a call of `function` is forwarded, in steps of at most 10 ms: when the
// function's delay is lowered meanwhile, the sleep ends at the new value.
void sleep_delay(const char* function, unsigned milliseconds) {
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  std::chrono::milliseconds delay(milliseconds);
  for (;;) {
    const auto slept = Clock::now() - started;
    if (slept >= delay) return;
    std::this_thread::sleep_for(
        std::min<Clock::duration>(delay - slept, std::chrono::milliseconds(10)));
    std::lock_guard lock(g_mutex);
    poll_delay_file_locked();
    const auto current = g_delays_ms.find(function);
    delay = std::min(
        delay, std::chrono::milliseconds(current == g_delays_ms.end() ? 0u : current->second));
  }
}

std::string hex(unsigned long value) {
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "0x%lx", value);
  return buffer;
}

template <std::size_t I, class Tuple>
void describe_argument(const Tuple& args, std::string& line) {
  using T = std::tuple_element_t<I, Tuple>;
  if constexpr (std::is_same_v<T, CK_MECHANISM_PTR>) {
    if (std::get<I>(args) != nullptr) line += " mech=" + hex(std::get<I>(args)->mechanism);
  } else if constexpr (std::is_same_v<T, CK_ATTRIBUTE_PTR> && I + 1 < std::tuple_size_v<Tuple>) {
    using Count = std::tuple_element_t<I + 1, Tuple>;
    if constexpr (std::is_same_v<Count, CK_ULONG>) {
      if (line.find(" attrs=") != std::string::npos) return;  // first template only
      const CK_ATTRIBUTE* attributes = std::get<I>(args);
      const CK_ULONG count = std::get<I + 1>(args);
      line += " attrs=";
      for (CK_ULONG i = 0; attributes != nullptr && i < count; ++i) {
        line += (i ? "," : "") + hex(attributes[i].type);
      }
    }
  }
}

template <class... Args>
void record(const char* function, CK_RV rv, Args... args) {
  if (g_record_fd < 0) return;
  std::string line(function);
  const auto tuple = std::make_tuple(args...);
  [&]<std::size_t... I>(std::index_sequence<I...>) { (describe_argument<I>(tuple, line), ...); }
  (std::index_sequence_for<Args...>{});
  line += " rv=" + hex(rv) + "\n";
  // One write per line on an O_APPEND descriptor: lines from several processes don't mix.
  [[maybe_unused]] const ssize_t written = write(g_record_fd, line.data(), line.size());
}

// Single-part and final calls: any failure but CKR_BUFFER_TOO_SMALL ends the operation.
bool terminates_operation(std::string_view name) {
  for (const char* f : {"C_Encrypt", "C_EncryptFinal", "C_Decrypt", "C_DecryptFinal", "C_Digest",
                        "C_DigestFinal", "C_Sign", "C_SignFinal", "C_Verify", "C_VerifyFinal"}) {
    if (name == f) return true;
  }
  return false;
}

// The session limit (kms_fault_limit_sessions): before a call, a C_OpenSession beyond the
// limit is refused and one within it takes its place; after it, the count follows what
// the real module opened and closed, and C_GetTokenInfo reports the limit.
CK_RV reserve_session(std::string_view name) {
  if (name != "C_OpenSession") return CKR_OK;
  std::lock_guard lock(g_mutex);
  if (g_session_limit > 0 && g_open_sessions >= g_session_limit) return CKR_SESSION_COUNT;
  ++g_open_sessions;
  return CKR_OK;
}

template <class... Args>
void account_sessions(std::string_view name, CK_RV rv, Args... args) {
  std::lock_guard lock(g_mutex);
  if (name == "C_OpenSession") {
    if (rv != CKR_OK && g_open_sessions > 0) --g_open_sessions;  // the reservation
  } else if (name == "C_CloseSession") {
    if (rv == CKR_OK && g_open_sessions > 0) --g_open_sessions;
  } else if (name == "C_CloseAllSessions" || name == "C_Finalize") {
    if (rv == CKR_OK) g_open_sessions = 0;
  }
  if constexpr (sizeof...(Args) == 2) {
    using Info = std::tuple_element_t<1, std::tuple<Args...>>;
    if constexpr (std::is_same_v<Info, CK_TOKEN_INFO_PTR>) {
      Info info = std::get<1>(std::make_tuple(args...));
      if (rv == CKR_OK && info != nullptr && g_session_limit > 0) {
        info->ulMaxSessionCount = g_session_limit;
        info->ulMaxRwSessionCount = g_session_limit;
        info->ulSessionCount = g_open_sessions;
      }
    }
  }
}

template <class Fn>
struct Forwarder;

template <class... Args>
struct Forwarder<CK_RV (*)(Args...)> {
  template <CK_RV (*CK_FUNCTION_LIST::*Member)(Args...), const char* Name>
  static CK_RV call(Args... args) {
    const Injection injection = injected(Name);
    if (injection.delay_ms > 0) sleep_delay(Name, injection.delay_ms);
    CK_RV rv = injection.rv;
    if (rv == CKR_OK) rv = reserve_session(Name);
    if (rv == CKR_OK) {
      rv = (g_real->*Member)(args...);
      account_sessions(Name, rv, args...);
    } else if (terminates_operation(Name)) {
      (void)(g_real->*Member)(args...);  // ends the real operation, as the failure would
    }
    record(Name, rv, args...);
    return rv;
  }
};

#define KMS_FAULT_FUNCTIONS(X)                                                                    \
  X(C_Initialize)                                                                                 \
  X(C_Finalize)                                                                                   \
  X(C_GetInfo)                                                                                    \
  X(C_GetSlotList) X(C_GetSlotInfo) X(C_GetTokenInfo) X(C_GetMechanismList) X(C_GetMechanismInfo) \
      X(C_InitToken) X(C_InitPIN) X(C_SetPIN) X(C_OpenSession) X(C_CloseSession) X(               \
          C_CloseAllSessions) X(C_GetSessionInfo) X(C_GetOperationState) X(C_SetOperationState)   \
          X(C_Login) X(C_Logout) X(C_CreateObject) X(C_CopyObject) X(C_DestroyObject) X(          \
              C_GetObjectSize) X(C_GetAttributeValue) X(C_SetAttributeValue) X(C_FindObjectsInit) \
              X(C_FindObjects) X(C_FindObjectsFinal) X(C_EncryptInit) X(C_Encrypt)                \
                  X(C_EncryptUpdate) X(C_EncryptFinal) X(C_DecryptInit) X(C_Decrypt)              \
                      X(C_DecryptUpdate) X(C_DecryptFinal) X(C_DigestInit) X(C_Digest)            \
                          X(C_DigestUpdate) X(C_DigestKey) X(C_DigestFinal) X(C_SignInit)         \
                              X(C_Sign) X(C_SignUpdate) X(C_SignFinal) X(C_SignRecoverInit)       \
                                  X(C_SignRecover) X(C_VerifyInit) X(C_Verify) X(C_VerifyUpdate)  \
                                      X(C_VerifyFinal) X(C_VerifyRecoverInit) X(C_VerifyRecover)  \
                                          X(C_DigestEncryptUpdate) X(C_DecryptDigestUpdate)       \
                                              X(C_SignEncryptUpdate) X(C_DecryptVerifyUpdate)     \
                                                  X(C_GenerateKey) X(C_GenerateKeyPair)           \
                                                      X(C_WrapKey) X(C_UnwrapKey) X(C_DeriveKey)  \
                                                          X(C_SeedRandom) X(C_GenerateRandom)     \
                                                              X(C_GetFunctionStatus)              \
                                                                  X(C_CancelFunction)             \
                                                                      X(C_WaitForSlotEvent)

#define KMS_FAULT_NAME(fn) constexpr char kName_##fn[] = #fn;
KMS_FAULT_FUNCTIONS(KMS_FAULT_NAME)
#undef KMS_FAULT_NAME

std::string g_target;  // the KMS_FAULT_TARGET g_real came from

bool load_target_locked() {
  const char* target = std::getenv("KMS_FAULT_TARGET");
  // This library may stay loaded between two loads of the module in one process (tests
  // of several tokens): follow KMS_FAULT_TARGET when it changes.
  if (g_list_ready && (target == nullptr || g_target == target)) return true;
  if (target == nullptr || *target == '\0') {
    std::fprintf(stderr, "kms_fault_pkcs11: KMS_FAULT_TARGET is not set\n");
    return false;
  }
  void* library = dlopen(target, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::fprintf(stderr, "kms_fault_pkcs11: cannot load %s: %s\n", target, dlerror());
    return false;
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(library, "C_GetFunctionList"));
  if (get_list == nullptr || get_list(&g_real) != CKR_OK || g_real == nullptr) {
    std::fprintf(stderr, "kms_fault_pkcs11: %s has no usable C_GetFunctionList\n", target);
    return false;
  }
  g_list.version = g_real->version;
#define KMS_FAULT_WIRE(fn)                                                                     \
  g_list.fn = &Forwarder<decltype(CK_FUNCTION_LIST::fn)>::template call<&CK_FUNCTION_LIST::fn, \
                                                                        kName_##fn>;
  KMS_FAULT_FUNCTIONS(KMS_FAULT_WIRE)
#undef KMS_FAULT_WIRE
  g_list.C_GetFunctionList = &C_GetFunctionList;
  if (g_record_fd >= 0) close(g_record_fd);
  g_record_fd = -1;
  if (const char* path = std::getenv("KMS_PKCS11_RECORD"); path != nullptr && *path != '\0') {
    g_record_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  }
  if (const char* delays = std::getenv("KMS_FAULT_DELAY"); delays != nullptr) {
    g_delays_ms = parse_control(delays, "KMS_FAULT_DELAY").delays;
  }
  if (const char* file = std::getenv("KMS_FAULT_DELAY_FILE"); file != nullptr) {
    g_delay_file = file;
    g_delay_file_stamp = FileStamp{};
  }
  g_target = target;
  g_list_ready = true;
  return true;
}

void close_all_real_sessions() {
  g_open_sessions = 0;  // g_mutex held by every caller
  CK_ULONG count = 0;
  if (g_real->C_GetSlotList(CK_TRUE, nullptr, &count) != CKR_OK) return;
  std::vector<CK_SLOT_ID> slots(count);
  if (g_real->C_GetSlotList(CK_TRUE, slots.data(), &count) != CKR_OK) return;
  for (CK_ULONG i = 0; i < count; ++i) g_real->C_CloseAllSessions(slots[i]);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  if (list == nullptr) return CKR_ARGUMENTS_BAD;
  std::lock_guard lock(g_mutex);
  if (!load_target_locked()) return CKR_GENERAL_ERROR;
  *list = &g_list;
  return CKR_OK;
}

__attribute__((visibility("default"))) void kms_fault_fail_next(const char* function, CK_RV rv,
                                                                int count) {
  std::lock_guard lock(g_mutex);
  g_armed[function] = Armed{rv, count};
  refresh_active_locked();
}

__attribute__((visibility("default"))) void kms_fault_fail_until_reinitialized(CK_RV rv) {
  std::lock_guard lock(g_mutex);
  g_until_reinit = rv;
  refresh_active_locked();
}

__attribute__((visibility("default"))) void kms_fault_set_token_present(int present) {
  std::lock_guard lock(g_mutex);
  g_token_present = present != 0;
  if (!g_token_present && g_real != nullptr) close_all_real_sessions();
  refresh_active_locked();
}

__attribute__((visibility("default"))) void kms_fault_close_all_sessions(void) {
  std::lock_guard lock(g_mutex);
  if (g_real != nullptr) close_all_real_sessions();
}

__attribute__((visibility("default"))) void kms_fault_limit_sessions(unsigned long max) {
  std::lock_guard lock(g_mutex);
  g_session_limit = max;
}

__attribute__((visibility("default"))) void kms_fault_clear(void) {
  std::lock_guard lock(g_mutex);
  g_session_limit = 0;
  g_armed.clear();
  g_until_reinit = CKR_OK;
  g_token_present = true;
  g_delays_ms.clear();
  refresh_active_locked();
}

__attribute__((visibility("default"))) void kms_fault_delay(const char* function,
                                                            unsigned milliseconds) {
  std::lock_guard lock(g_mutex);
  if (milliseconds == 0) {
    g_delays_ms.erase(function);
  } else {
    g_delays_ms[function] = milliseconds;
  }
}

__attribute__((visibility("default"))) unsigned long kms_fault_call_count(const char* function) {
  std::lock_guard lock(g_mutex);
  const auto found = g_counts.find(function);
  return found == g_counts.end() ? 0 : found->second;
}

}  // extern "C"
