# The heap allocator of kmsd and kms-provision (docs/ARCHITECTURE.md "The heap allocator").
#   KMS_MALLOC=auto      jemalloc when found and no sanitizer or fuzzer is built, else the system's
#   KMS_MALLOC=jemalloc  jemalloc, or a configure error
#   KMS_MALLOC=system    the C library's malloc (glibc)
# The token library runs inside the process and allocates on every call (SoftHSM: about a
# dozen allocations per C_DeriveKey), so the allocator is part of the hot path. Sanitizers
# bring their own allocator, so those builds keep the system's.
set(KMS_MALLOC "auto" CACHE STRING "Heap allocator of kmsd and kms-provision: auto | jemalloc | system")
set_property(CACHE KMS_MALLOC PROPERTY STRINGS auto jemalloc system)
if(NOT KMS_MALLOC MATCHES "^(auto|jemalloc|system)$")
  message(FATAL_ERROR "KMS_MALLOC: \"${KMS_MALLOC}\" is none of auto, jemalloc, system")
endif()

set(kms_malloc_name "system")
if(NOT KMS_MALLOC STREQUAL "system")
  find_library(KMS_JEMALLOC_LIBRARY NAMES jemalloc)
  set(kms_malloc_sanitized OFF)
  if(KMS_FUZZ OR NOT kms_sanitizers STREQUAL "")
    set(kms_malloc_sanitized ON)
  endif()
  if(KMS_MALLOC STREQUAL "jemalloc" AND NOT KMS_JEMALLOC_LIBRARY)
    message(FATAL_ERROR "KMS_MALLOC=jemalloc: libjemalloc not found (Debian: libjemalloc-dev)")
  elseif(KMS_MALLOC STREQUAL "jemalloc" AND kms_malloc_sanitized)
    message(FATAL_ERROR "KMS_MALLOC=jemalloc cannot be combined with sanitizers or KMS_FUZZ")
  elseif(KMS_JEMALLOC_LIBRARY AND NOT kms_malloc_sanitized)
    set(kms_malloc_name "jemalloc")
  endif()
endif()
message(STATUS "Heap allocator of kmsd and kms-provision: ${kms_malloc_name}")

# Linked whatever --as-needed says: nothing calls jemalloc by name, it replaces malloc for the
# whole process (the dlopen()ed token library included).
add_library(kms_malloc INTERFACE)
if(kms_malloc_name STREQUAL "jemalloc")
  target_link_libraries(kms_malloc INTERFACE "-Wl,--push-state,--no-as-needed"
                                             "${KMS_JEMALLOC_LIBRARY}" "-Wl,--pop-state")
endif()
# What the tests expect kmsd to report (kms_build_info{malloc=...}).
set(KMS_MALLOC_NAME "${kms_malloc_name}")
