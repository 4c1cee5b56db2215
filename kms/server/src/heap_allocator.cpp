#include "kms/server/heap_allocator.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>

namespace kms::server {

HeapAllocator heap_allocator() {
  // jemalloc's control interface; present in the process only when jemalloc is its malloc.
  using Mallctl = int (*)(const char*, void*, std::size_t*, void*, std::size_t);
  if (void* symbol = ::dlsym(RTLD_DEFAULT, "mallctl")) {
    const auto mallctl = reinterpret_cast<Mallctl>(symbol);
    const char* version = nullptr;
    std::size_t size = sizeof(version);
    if (mallctl("version", &version, &size, nullptr, 0) == 0 && version != nullptr) {
      return {"jemalloc", version};
    }
    return {"jemalloc", "?"};
  }
  return {"system", std::string("glibc ") + ::gnu_get_libc_version()};
}

}  // namespace kms::server
