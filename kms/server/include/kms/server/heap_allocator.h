#pragma once
// Which heap allocator this process runs on, found at run time (not from the build
// configuration): a build that meant to link jemalloc but lost it shows "system".
#include <string>

namespace kms::server {

struct HeapAllocator {
  std::string name;     // "jemalloc" or "system"
  std::string version;  // jemalloc's own version string, or glibc's
};

HeapAllocator heap_allocator();

}  // namespace kms::server
