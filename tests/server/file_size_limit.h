// Test helper: holds this process's file size limit (RLIMIT_FSIZE) low, so that a write to a
// regular file fails with EFBIG past a size, on demand (a real failure of a real file).
#pragma once

#include <sys/resource.h>

#include <csignal>
#include <stdexcept>

namespace kmstest {

// Lowers this process's soft RLIMIT_FSIZE (with SIGXFSZ ignored) so that a regular file
// cannot grow past `bytes`: a write there fails with EFBIG. restore() (or the destructor)
// puts the limit back and the same file takes writes again: a target that fails once.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    if (::getrlimit(RLIMIT_FSIZE, &saved_) != 0) throw std::runtime_error("getrlimit");
    previous_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) throw std::runtime_error("setrlimit");
    active_ = true;
  }
  ~FileSizeLimit() { restore(); }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  void restore() {
    if (!active_) return;
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_handler_);
    active_ = false;
  }

 private:
  rlimit saved_{};
  void (*previous_handler_)(int) = SIG_DFL;
  bool active_ = false;
};

}  // namespace kmstest
