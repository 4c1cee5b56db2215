// One line per event on stderr, key=value (logfmt) or JSON. Values are quoted and escaped,
// so a client-chosen value (a path, an identity) cannot forge a second line. Callers never
// pass key bytes, nonces or PINs.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kms/server/config.h"

namespace kms::server {

using LogFields = std::vector<std::pair<std::string, std::string>>;

class Logger {
 public:
  Logger(LogLevel level, LogFormat format) : level_(level), format_(format) {}
  void log(LogLevel level, std::string_view message, const LogFields& fields = {});
  void info(std::string_view message, const LogFields& fields = {}) {
    log(LogLevel::info, message, fields);
  }
  void warn(std::string_view message, const LogFields& fields = {}) {
    log(LogLevel::warn, message, fields);
  }
  void error(std::string_view message, const LogFields& fields = {}) {
    log(LogLevel::error, message, fields);
  }
  bool enabled(LogLevel level) const { return level >= level_; }

 private:
  LogLevel level_;
  LogFormat format_;
  std::mutex mutex_;
};

}  // namespace kms::server
