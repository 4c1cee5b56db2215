// One line per event on stderr, key=value (logfmt) or JSON. Values are quoted and escaped,
// so a client-chosen value (a path, an identity) cannot forge a second line. Callers never
// pass key bytes, nonces or PINs. With journal_priority each line starts with the syslog
// priority prefix journald reads from a stream (sd-daemon(3)): <3> error, <4> warn,
// <6> info, <7> debug.
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
  Logger(LogLevel level, LogFormat format, bool journal_priority = false)
      : level_(level), format_(format), journal_priority_(journal_priority) {}
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
  bool journal_priority_;
  std::mutex mutex_;
};

// "<3>", "<4>", "<6>" or "<7>": the syslog priority of a level.
std::string_view journal_priority_prefix(LogLevel level);

// Whether file descriptor `fd` is the stream systemd connected to the journal:
// `journal_stream` ($JOURNAL_STREAM, "DEVICE:INODE") names the device and inode of that
// stream, and fd must be that file (a child whose stderr was redirected inherits the
// variable but not the stream). False for nullptr or a malformed value.
bool is_journal_stream(int fd, const char* journal_stream);

}  // namespace kms::server
