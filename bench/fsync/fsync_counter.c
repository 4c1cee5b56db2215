/* LD_PRELOAD counter of fsync(2) and fdatasync(2) for scripts/bench: each call adds one to
 * a 64-bit counter in the file named by KMS_FSYNC_COUNTER_FILE (mapped shared, so the
 * bench reads the counts while the process runs: two little-endian u64, fsync then
 * fdatasync), then calls the real function. Without the variable it only forwards. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint64_t* counters;

__attribute__((constructor)) static void map_counters(void) {
  const char* path = getenv("KMS_FSYNC_COUNTER_FILE");
  if (path == NULL) return;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (ftruncate(fd, 2 * sizeof(uint64_t)) == 0) {
    void* mapped = mmap(NULL, 2 * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mapped != MAP_FAILED) counters = mapped;
  }
  close(fd);
}

static void count(int which) {
  if (counters != NULL) __atomic_fetch_add(&counters[which], 1, __ATOMIC_RELAXED);
}

int fsync(int fd) {
  static int (*real)(int);
  if (real == NULL) {
    void* symbol = dlsym(RTLD_NEXT, "fsync");
    memcpy(&real, &symbol, sizeof real); /* ISO C: no direct object-to-function cast */
  }
  count(0);
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (real == NULL) {
    void* symbol = dlsym(RTLD_NEXT, "fdatasync");
    memcpy(&real, &symbol, sizeof real); /* ISO C: no direct object-to-function cast */
  }
  count(1);
  return real(fd);
}
