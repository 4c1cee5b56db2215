// Whether this test program was built with AddressSanitizer, and what the process has
// allocated and not freed. ASan replaces malloc: glibc's counters then read zero, freed
// memory waits in a quarantine and every block carries red zones, so RSS is no longer the
// product's memory. Tests that bound memory measure it through the allocator in use.
#pragma once

#include <malloc.h>

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define KMS_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KMS_TEST_ASAN 1
#endif
#endif

// TSan replaces malloc too (its counters are read the same way).
#if defined(__SANITIZE_THREAD__)
#define KMS_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KMS_TEST_TSAN 1
#endif
#endif

#if defined(KMS_TEST_ASAN) || defined(KMS_TEST_TSAN)
#define KMS_TEST_SANITIZER_ALLOCATOR 1
#include <sanitizer/allocator_interface.h>
#endif

namespace testsupport {

#ifdef KMS_TEST_ASAN
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif

// Heap bytes allocated and not freed in this process (every library's, the token's too).
inline std::size_t heap_in_use_bytes() {
#ifdef KMS_TEST_SANITIZER_ALLOCATOR
  return __sanitizer_get_current_allocated_bytes();
#else
  return mallinfo2().uordblks;
#endif
}

}  // namespace testsupport
