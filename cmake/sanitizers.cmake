# Sanitizer and fuzzing builds (docs/TESTING.md). Each goes into its own build folder:
#   KMS_SANITIZE=address,undefined  ASan + UBSan; UB aborts (-fno-sanitize-recover=all) so a
#                                   test that hits it fails instead of printing and going on.
#   KMS_SANITIZE=thread             TSan (the concurrency suites).
#   KMS_FUZZ=ON                     clang only: every library instrumented for libFuzzer
#                                   (-fsanitize=fuzzer-no-link) and the targets of tests/fuzz;
#                                   ASan + UBSan unless KMS_SANITIZE says otherwise.
# KMS_SANITIZE=ON (the old boolean option) still means address,undefined.
set(KMS_SANITIZE "" CACHE STRING
    "Sanitizers to build with: address,undefined | thread | empty for none")
option(KMS_FUZZ "Build the libFuzzer targets of tests/fuzz (clang only)" OFF)

if(KMS_FUZZ AND NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "KMS_FUZZ=ON needs clang (libFuzzer): configure with "
                      "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++")
endif()

set(kms_sanitizers "${KMS_SANITIZE}")
if(kms_sanitizers MATCHES "^(ON|on|TRUE|true|YES|yes|1)$")
  set(kms_sanitizers "address,undefined")
elseif(kms_sanitizers MATCHES "^(OFF|off|FALSE|false|NO|no|0)$")
  set(kms_sanitizers "")
endif()
if(KMS_FUZZ AND kms_sanitizers STREQUAL "")
  set(kms_sanitizers "address,undefined")
endif()

if(NOT kms_sanitizers STREQUAL "")
  string(REPLACE "," ";" kms_sanitizer_list "${kms_sanitizers}")
  foreach(sanitizer IN LISTS kms_sanitizer_list)
    if(NOT sanitizer MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "KMS_SANITIZE: unknown sanitizer \"${sanitizer}\" "
                          "(address, undefined, thread, leak)")
    endif()
  endforeach()
  if("thread" IN_LIST kms_sanitizer_list AND "address" IN_LIST kms_sanitizer_list)
    message(FATAL_ERROR "KMS_SANITIZE: thread and address cannot be combined")
  endif()
  message(STATUS "Sanitizers: ${kms_sanitizers}")
  add_compile_options(-fsanitize=${kms_sanitizers} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${kms_sanitizers})
endif()

if(KMS_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link)
  add_link_options(-fsanitize=fuzzer-no-link)
endif()
