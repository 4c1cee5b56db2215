// systemd's service notification protocol (sd_notify(3)), without libsystemd: one datagram
// on the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
// namespace). kmsd sends READY=1 once its listener is bound, RELOADING=1 and READY=1 around
// a SIGHUP reload, STOPPING=1 when the drain begins. Without $NOTIFY_SOCKET (not run by
// systemd as Type=notify) every call does nothing.
#pragma once

#include <string>
#include <string_view>

namespace kms::server {

// Sends `state` (newline-separated VAR=VALUE assignments). True when the datagram was sent;
// false when $NOTIFY_SOCKET is unset or unusable (the service manager is informed, never
// relied on: a failure changes nothing else).
bool notify_service_manager(std::string_view state);

// "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC now>", as systemd expects for a reload.
std::string reloading_notification();

}  // namespace kms::server
