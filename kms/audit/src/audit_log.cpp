#include "kms/audit/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>

#include "kms/audit/audit_record.h"

namespace kms::audit {
namespace {

constexpr off_t kTailBlock = 64 * 1024;  // records are far smaller than this

std::string errno_text(int error) { return std::strerror(error); }

}  // namespace

AuditLog::AuditLog(std::string path) : path_(std::move(path)), head_(kGenesisHash) {
  // A new log is the KMS user's alone: mode 0600 whatever the umask (which could only take
  // bits away, the owner's write bit included).
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  const bool created = fd_ >= 0;
  if (!created && errno == EEXIST) fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) {
    throw AuditUnavailable("audit: cannot open " + path_ + ": " + errno_text(errno));
  }
  if (created && ::fchmod(fd_, 0600) != 0) {
    const int error = errno;
    ::close(fd_);
    throw AuditUnavailable("audit: cannot chmod " + path_ + ": " + errno_text(error));
  }
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    const int error = errno;
    ::close(fd_);
    throw AuditUnavailable("audit: cannot stat " + path_ + ": " + errno_text(error));
  }
  regular_file_ = S_ISREG(info.st_mode);
  // One writer per log: a second process appending with its own idea of the chain's head
  // would break the chain.
  if (regular_file_ && ::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd_);
    throw AuditUnavailable("audit: " + path_ + " is in use by another process (" +
                           errno_text(error) + ")");
  }
  try {
    if (regular_file_) resume();
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

AuditLog::~AuditLog() {
  if (fd_ >= 0) ::close(fd_);
}

void AuditLog::resume() {
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size <= 0) return;  // a new, empty log
  const off_t start = size > kTailBlock ? size - kTailBlock : 0;
  std::string tail(static_cast<std::size_t>(size - start), '\0');
  if (::pread(fd_, tail.data(), tail.size(), start) != static_cast<ssize_t>(tail.size())) {
    throw AuditUnavailable("audit: cannot read the tail of " + path_);
  }
  std::uint64_t torn_bytes = 0;
  if (tail.back() != '\n') {
    // A write that never completed: its record() never returned, so nothing relied on it.
    const auto last_newline = tail.rfind('\n');
    if (last_newline == std::string::npos && start > 0) {
      throw AuditUnavailable("audit: " + path_ + " ends with an over-long torn line");
    }
    const std::size_t keep = last_newline == std::string::npos ? 0 : last_newline + 1;
    torn_bytes = tail.size() - keep;
    if (::ftruncate(fd_, start + static_cast<off_t>(keep)) != 0 || ::fdatasync(fd_) != 0) {
      throw AuditUnavailable("audit: cannot cut the torn tail of " + path_ + ": " +
                             errno_text(errno));
    }
    tail.resize(keep);
  }
  if (!tail.empty()) {
    tail.pop_back();  // the final newline
    const auto previous_newline = tail.rfind('\n');
    if (previous_newline == std::string::npos && start > 0) {
      throw AuditUnavailable("audit: " + path_ + " ends with an over-long line");
    }
    const std::string last =
        previous_newline == std::string::npos ? tail : tail.substr(previous_newline + 1);
    const LineHash hash = line_hash(last);
    boost::system::error_code ec;
    const boost::json::value value = boost::json::parse(last, ec);
    const boost::json::value* seq =
        (!ec && value.is_object()) ? value.as_object().if_contains("seq") : nullptr;
    if (!hash.ok() || !seq || !seq->is_int64()) {
      throw AuditUnavailable("audit: the last record of " + path_ +
                             " is damaged; run `kms-audit verify " + path_ + "`");
    }
    seq_ = static_cast<std::uint64_t>(seq->as_int64());
    head_ = hash.claimed;
    synced_seq_ = seq_;
    synced_hash_ = head_;
  }
  if (torn_bytes > 0) {
    record({"audit_recovered", "ok", {{"torn_bytes_removed", std::to_string(torn_bytes)}}});
  }
}

void AuditLog::record(const AuditEvent& event) { sync_through(append_record(event)); }

void AuditLog::append(const AuditEvent& event) { (void)append_record(event); }

void AuditLog::sync() {
  std::uint64_t through = 0;
  {
    std::lock_guard lock(write_mutex_);
    if (broken_) {  // an append failed: what was appended since the last sync is not durable
      ++stats_.failures;
      throw AuditUnavailable("audit: log " + path_ + " failed earlier; records not durable");
    }
    through = seq_;
  }
  sync_through(through);
}

std::uint64_t AuditLog::append_record(const AuditEvent& event) {
  std::lock_guard lock(write_mutex_);
  if (broken_) {
    ++stats_.failures;
    throw AuditUnavailable("audit: log " + path_ + " failed earlier; nothing is recorded");
  }
  const std::uint64_t seq = seq_ + 1;
  std::string line = format_record(seq, utc_now_rfc3339(), head_, event);
  const std::string hash = line_hash(line).claimed;
  line.push_back('\n');
  write_line(std::move(line));  // throws, and marks the log broken, on failure
  seq_ = seq;
  head_ = hash;
  ++stats_.records;
  return seq;
}

void AuditLog::write_line(std::string line) {
  std::size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : EIO;
      broken_ = true;
      ++stats_.failures;
      throw AuditUnavailable("audit: write to " + path_ + " failed: " + errno_text(error));
    }
    written += static_cast<std::size_t>(n);
  }
}

// Group commit: a record is durable once any fdatasync that started after its write ends.
void AuditLog::sync_through(std::uint64_t seq) {
  std::lock_guard sync_lock(sync_mutex_);
  if (synced_seq_ >= seq) return;
  std::uint64_t covered = 0;
  std::string covered_hash;
  {
    std::lock_guard lock(write_mutex_);
    // After a failed sync the kernel may have dropped dirty pages: trust no later sync.
    if (broken_) {
      ++stats_.failures;
      throw AuditUnavailable("audit: log " + path_ + " failed earlier; record not durable");
    }
    covered = seq_;
    covered_hash = head_;
  }
  if (regular_file_ && ::fdatasync(fd_) != 0) {
    const int error = errno;
    std::lock_guard lock(write_mutex_);
    broken_ = true;
    ++stats_.failures;
    throw AuditUnavailable("audit: fdatasync of " + path_ + " failed: " + errno_text(error));
  }
  synced_seq_ = covered;
  synced_hash_ = std::move(covered_hash);
  std::lock_guard lock(write_mutex_);
  ++stats_.syncs;
}

std::optional<AuditHead> AuditLog::head() const {
  std::lock_guard lock(sync_mutex_);
  if (synced_seq_ == 0) return std::nullopt;
  return AuditHead{synced_seq_, synced_hash_};
}

std::uint64_t AuditLog::last_seq() const {
  std::lock_guard lock(write_mutex_);
  return seq_;
}

std::string AuditLog::head_hash() const {
  std::lock_guard lock(write_mutex_);
  return head_;
}

AuditLogStats AuditLog::stats() const {
  std::lock_guard lock(write_mutex_);
  return stats_;
}

}  // namespace kms::audit
