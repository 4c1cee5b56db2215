/* LD_PRELOAD counter of fsync(2) and fdatasync(2) for scripts/bench: each call adds one to
 * a 64-bit counter in the file named by KMS_FSYNC_COUNTER_FILE (mapped shared, so the
 * bench reads the counts while the process runs), calls the real function and adds how
 * long it took. Five little-endian u64: fsync calls, fdatasync calls, microseconds in
 * both, calls that took over 5 ms, calls that took over 20 ms (the disk's tail, which
 * every durable admission waits for). Without the variable it only forwards. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { kFsync, kFdatasync, kMicroseconds, kOver5ms, kOver20ms, kCounters };
static uint64_t* counters;

__attribute__((constructor)) static void map_counters(void) {
  const char* path = getenv("KMS_FSYNC_COUNTER_FILE");
  if (path == NULL) return;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (ftruncate(fd, kCounters * sizeof(uint64_t)) == 0) {
    void* mapped =
        mmap(NULL, kCounters * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mapped != MAP_FAILED) counters = mapped;
  }
  close(fd);
}

static uint64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static void count(int which, uint64_t started_us) {
  if (counters == NULL) return;
  const uint64_t took = now_us() - started_us;
  __atomic_fetch_add(&counters[which], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&counters[kMicroseconds], took, __ATOMIC_RELAXED);
  if (took > 5000) __atomic_fetch_add(&counters[kOver5ms], 1, __ATOMIC_RELAXED);
  if (took > 20000) __atomic_fetch_add(&counters[kOver20ms], 1, __ATOMIC_RELAXED);
}

int fsync(int fd) {
  static int (*real)(int);
  if (real == NULL) {
    void* symbol = dlsym(RTLD_NEXT, "fsync");
    memcpy(&real, &symbol, sizeof real); /* ISO C: no direct object-to-function cast */
  }
  const uint64_t started = now_us();
  const int result = real(fd);
  count(kFsync, started);
  return result;
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (real == NULL) {
    void* symbol = dlsym(RTLD_NEXT, "fdatasync");
    memcpy(&real, &symbol, sizeof real); /* ISO C: no direct object-to-function cast */
  }
  const uint64_t started = now_us();
  const int result = real(fd);
  count(kFdatasync, started);
  return result;
}
