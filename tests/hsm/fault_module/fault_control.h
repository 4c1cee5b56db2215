// The fault module's control API, resolved with dlsym from the copy of kms_fault_pkcs11
// that p11-kit loaded into this process (see fault_pkcs11.cpp for what each call does).
#pragma once

#include <dlfcn.h>

#include <stdexcept>
#include <string>

#include "hsm/pkcs11.h"

namespace hsmtest {

class FaultControl {
 public:
  // module_path: the fault module's .so, already loaded (hsm::Module::load) in-process.
  explicit FaultControl(const std::string& module_path) {
    handle_ = dlopen(module_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle_ == nullptr) throw std::runtime_error("fault module not loaded: " + module_path);
    resolve(fail_next_, "kms_fault_fail_next");
    resolve(fail_until_reinitialized_, "kms_fault_fail_until_reinitialized");
    resolve(set_token_present_, "kms_fault_set_token_present");
    resolve(close_all_sessions_, "kms_fault_close_all_sessions");
    resolve(clear_, "kms_fault_clear");
    resolve(call_count_, "kms_fault_call_count");
    resolve(delay_, "kms_fault_delay");
    resolve(limit_sessions_, "kms_fault_limit_sessions");
  }
  ~FaultControl() {
    if (handle_ != nullptr) dlclose(handle_);
  }
  FaultControl(const FaultControl&) = delete;
  FaultControl& operator=(const FaultControl&) = delete;

  void fail_next(const char* function, CK_RV rv, int count = 1) { fail_next_(function, rv, count); }
  void fail_until_reinitialized(CK_RV rv) { fail_until_reinitialized_(rv); }
  void set_token_present(bool present) { set_token_present_(present ? 1 : 0); }
  void close_all_sessions() { close_all_sessions_(); }
  void clear() { clear_(); }
  unsigned long call_count(const char* function) { return call_count_(function); }
  void delay(const char* function, unsigned milliseconds) { delay_(function, milliseconds); }
  // A token that allows `max` sessions (0: no limit): reported and enforced.
  void limit_sessions(unsigned long max) { limit_sessions_(max); }

 private:
  template <class Fn>
  void resolve(Fn& fn, const char* name) {
    fn = reinterpret_cast<Fn>(dlsym(handle_, name));
    if (fn == nullptr) throw std::runtime_error(std::string("fault module lacks ") + name);
  }
  void* handle_ = nullptr;
  void (*fail_next_)(const char*, CK_RV, int) = nullptr;
  void (*fail_until_reinitialized_)(CK_RV) = nullptr;
  void (*set_token_present_)(int) = nullptr;
  void (*close_all_sessions_)() = nullptr;
  void (*clear_)() = nullptr;
  unsigned long (*call_count_)(const char*) = nullptr;
  void (*delay_)(const char*, unsigned) = nullptr;
  void (*limit_sessions_)(unsigned long) = nullptr;
};

}  // namespace hsmtest
