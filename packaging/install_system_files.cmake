# Run by `cmake --install` and cpack (install(SCRIPT) in packaging/CMakeLists.txt, after
# install(CODE) set the KMS_* variables): installs the files whose place depends on the
# prefix as GNUInstallDirs decides it for SYSCONFDIR, here at install time.
#   prefix /usr (the package):  /etc/kms/...,          /lib/systemd/system/kmsd.service
#   any other prefix P:          P/etc/kms/...,         P/lib/systemd/system/kmsd.service
# The unit names /usr/bin/kmsd and /etc/kms; for another prefix those paths are rewritten.
function(kms_place variable relative default_for_usr)
  if(IS_ABSOLUTE "${relative}")
    set(${variable} "${relative}" PARENT_SCOPE)
  elseif(CMAKE_INSTALL_PREFIX STREQUAL "/usr" AND NOT default_for_usr STREQUAL "")
    set(${variable} "${default_for_usr}" PARENT_SCOPE)
  else()
    set(${variable} "${CMAKE_INSTALL_PREFIX}/${relative}" PARENT_SCOPE)
  endif()
endfunction()

kms_place(kms_etc "${KMS_INSTALL_SYSCONFDIR}" "/etc")
kms_place(kms_bin "${KMS_INSTALL_BINDIR}" "")
kms_place(kms_units "lib/systemd/system" "/lib/systemd/system")

file(READ "${KMS_PACKAGING_SOURCE_DIR}/kmsd.service" unit)
string(REPLACE "/usr/bin/" "${kms_bin}/" unit "${unit}")
string(REPLACE "/etc/kms" "${kms_etc}/kms" unit "${unit}")
# One staging folder per destination, so that cpack and cmake --install do not share one.
string(MD5 destination "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(staged "${KMS_PACKAGING_BINARY_DIR}/staged/${destination}")
file(MAKE_DIRECTORY "${staged}")
file(WRITE "${staged}/kmsd.service" "${unit}")

file(INSTALL DESTINATION "${kms_units}" TYPE FILE FILES "${staged}/kmsd.service")
file(INSTALL DESTINATION "${kms_etc}/kms" TYPE FILE
     FILES "${KMS_EXAMPLE_CONFIG}" "${KMS_PACKAGING_SOURCE_DIR}/softhsm2.conf")
