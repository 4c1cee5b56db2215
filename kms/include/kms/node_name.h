// A node's name among the kmsd nodes sharing one database: the key of its audit anchor
// (docs/DEPLOYMENT.md "Audit across nodes"), read by kmsd ([server] node_name) and by
// kms-audit (--node), which default to the same value on the same host.
#pragma once

#include <unistd.h>

#include <string>
#include <string_view>

namespace kms {

// 1 to 64 characters of A-Z a-z 0-9 . _ -
inline bool valid_node_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The host name, or "kmsd" when there is none or it is not a valid node name (a default
// that never makes a configuration fail).
inline std::string default_node_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "kmsd";
  const std::string text(name);
  return valid_node_name(text) ? text : "kmsd";
}

}  // namespace kms
