#include "kms/audit/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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

AuditLog::AuditLog(std::string path, AuditLogOptions options)
    : path_(std::move(path)), options_(options), head_(kGenesisHash) {
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

AuditLog::Tail AuditLog::read_tail() {
  Tail result;
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size < 0) throw AuditUnavailable("audit: cannot seek in " + path_ + ": " + errno_text(errno));
  if (size == 0) return result;  // a new, empty log
  const off_t start = size > kTailBlock ? size - kTailBlock : 0;
  std::string tail(static_cast<std::size_t>(size - start), '\0');
  if (::pread(fd_, tail.data(), tail.size(), start) != static_cast<ssize_t>(tail.size())) {
    throw AuditUnavailable("audit: cannot read the tail of " + path_);
  }
  if (tail.back() != '\n') {
    // A write that never completed: its record() never returned, so nothing relied on it.
    const auto last_newline = tail.rfind('\n');
    if (last_newline == std::string::npos && start > 0) {
      throw AuditUnavailable("audit: " + path_ + " ends with an over-long torn line");
    }
    const std::size_t keep = last_newline == std::string::npos ? 0 : last_newline + 1;
    result.torn_bytes = tail.size() - keep;
    if (::ftruncate(fd_, start + static_cast<off_t>(keep)) != 0 || ::fdatasync(fd_) != 0) {
      throw AuditUnavailable("audit: cannot cut the torn tail of " + path_ + ": " +
                             errno_text(errno));
    }
    tail.resize(keep);
  }
  if (tail.empty()) return result;
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
  result.seq = static_cast<std::uint64_t>(seq->as_int64());
  result.hash = hash.claimed;
  if (synced_seq_ > 0) {  // every line starts with {"seq":N, (format_record)
    const std::string prefix = "{\"seq\":" + std::to_string(synced_seq_) + ",";
    for (std::size_t begin = 0; begin < tail.size();) {
      const std::size_t end = std::min(tail.find('\n', begin), tail.size());
      const std::string_view line(tail.data() + begin, end - begin);
      if (line.starts_with(prefix)) result.hash_of_synced = line_hash(line).claimed;
      begin = end + 1;
    }
  }
  return result;
}

void AuditLog::resume() {
  const Tail tail = read_tail();
  if (tail.seq > 0) {
    seq_ = tail.seq;
    head_ = tail.hash;
    synced_seq_ = seq_;
    synced_hash_ = head_;
  }
  if (tail.torn_bytes > 0) {
    record({"audit_recovered", "ok", {{"torn_bytes_removed", std::to_string(tail.torn_bytes)}}});
  }
}

void AuditLog::record(const AuditEvent& event) {
  ensure_writable(true);
  sync_through(append_record(event));
}

void AuditLog::append(const AuditEvent& event) {
  ensure_writable(true);
  (void)append_record(event);
}

void AuditLog::sync() {
  ensure_writable(true);
  std::uint64_t through = 0;
  {
    std::lock_guard lock(write_mutex_);
    if (broken_) {  // an append failed: what was appended since the last sync is not durable
      ++stats_.failures;
      ++outage_refusals_;
      throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ +
                             "); records not durable");
    }
    through = seq_;
  }
  sync_through(through);
}

bool AuditLog::probe() {
  try {
    ensure_writable(false);
    return true;
  } catch (const AuditUnavailable&) {
    return false;
  }
}

void AuditLog::on_health_change(std::function<void(bool, const std::string&)> callback) {
  std::lock_guard lock(write_mutex_);
  on_health_change_ = std::move(callback);
}

void AuditLog::mark_failed(const std::string& what) {
  ++stats_.failures;
  if (broken_) {
    ++outage_refusals_;
    return;
  }
  broken_ = true;
  failure_ = what;
  failed_at_ = utc_now_rfc3339();
  outage_refusals_ = 1;
  next_retry_ = Clock::now() + options_.retry_interval;
  if (on_health_change_) on_health_change_(false, what);
}

void AuditLog::ensure_writable(bool count_refusal) {
  {
    std::lock_guard lock(write_mutex_);
    if (!broken_) return;
  }
  std::lock_guard sync_lock(sync_mutex_);
  std::lock_guard lock(write_mutex_);
  if (!broken_) return;  // resumed meanwhile
  std::string why_not;
  if (Clock::now() >= next_retry_) {
    try {
      resume_after_failure();
      return;
    } catch (const AuditUnavailable& error) {
      next_retry_ = Clock::now() + options_.retry_interval;
      why_not = std::string("; cannot resume yet: ") + error.what();
    }
  }
  if (count_refusal) {
    ++stats_.failures;
    ++outage_refusals_;
  }
  throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ + "); nothing is " +
                         "recorded until it resumes" + why_not);
}

// The failing record was never acknowledged and is not written now; what the file holds is
// the truth: its tail is cut back to the last complete record, which must still include
// every record a sync covered, and the chain goes on from there.
void AuditLog::resume_after_failure() {
  if (regular_file_ && options_.resume_free_bytes > 0) {
    struct statvfs fs {};
    if (::fstatvfs(fd_, &fs) == 0) {
      const std::uint64_t free = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
      if (free < options_.resume_free_bytes) {
        throw AuditUnavailable("audit: " + std::to_string(free) + " bytes free on the " +
                               "filesystem of " + path_ + ", " +
                               std::to_string(options_.resume_free_bytes) + " needed to resume");
      }
    }
  }
  Tail tail;
  if (regular_file_) {
    tail = read_tail();
    if (tail.seq < synced_seq_) {
      throw AuditUnavailable("audit: " + path_ + " ends at seq " + std::to_string(tail.seq) +
                             " but seq " + std::to_string(synced_seq_) +
                             " was synced: durable records are missing; run kms-audit verify");
    }
    if (tail.seq > seq_) {
      throw AuditUnavailable("audit: " + path_ + " holds records after seq " +
                             std::to_string(seq_) + " that this process did not write");
    }
    if (tail.hash_of_synced && *tail.hash_of_synced != synced_hash_) {
      throw AuditUnavailable("audit: record " + std::to_string(synced_seq_) + " of " + path_ +
                             " is not the one that was synced; run kms-audit verify");
    }
    seq_ = tail.seq;
    head_ = tail.seq > 0 ? tail.hash : std::string(kGenesisHash);
  }
  const AuditEvent event{"audit_recovered",
                         "ok",
                         {{"error", failure_},
                          {"failed_at", failed_at_},
                          {"refused", std::to_string(outage_refusals_)},
                          {"last_durable_seq", std::to_string(synced_seq_)},
                          {"torn_bytes_removed", std::to_string(tail.torn_bytes)}}};
  const std::uint64_t seq = seq_ + 1;
  std::string line = format_record(seq, utc_now_rfc3339(), head_, event);
  const std::string hash = line_hash(line).claimed;
  line.push_back('\n');
  write_line(std::move(line));  // throws: still failed (a torn piece is cut next time)
  seq_ = seq;
  head_ = hash;
  ++stats_.records;
  if (regular_file_ && ::fdatasync(fd_) != 0) {
    throw AuditUnavailable("audit: fdatasync of " + path_ + " failed: " + errno_text(errno));
  }
  synced_seq_ = seq;
  synced_hash_ = hash;
  ++stats_.syncs;
  ++stats_.recoveries;
  broken_ = false;
  failure_.clear();
  outage_refusals_ = 0;
  if (on_health_change_) on_health_change_(true, "resumed at seq " + std::to_string(seq));
}

std::uint64_t AuditLog::append_record(const AuditEvent& event) {
  std::lock_guard lock(write_mutex_);
  if (broken_) {
    ++stats_.failures;
    ++outage_refusals_;
    throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ +
                           "); nothing is recorded until it resumes");
  }
  const std::uint64_t seq = seq_ + 1;
  std::string line = format_record(seq, utc_now_rfc3339(), head_, event);
  const std::string hash = line_hash(line).claimed;
  line.push_back('\n');
  try {
    write_line(std::move(line));
  } catch (const AuditUnavailable& error) {
    mark_failed(error.what());
    throw;
  }
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
    // After a failed sync the kernel may have dropped dirty pages: trust no later sync
    // until the log has resumed (and re-read what the file holds).
    if (broken_) {
      ++stats_.failures;
      ++outage_refusals_;
      throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ +
                             "); record not durable");
    }
    covered = seq_;
    covered_hash = head_;
  }
  if (regular_file_ && ::fdatasync(fd_) != 0) {
    const std::string what = "fdatasync of " + path_ + " failed: " + errno_text(errno);
    std::lock_guard lock(write_mutex_);
    mark_failed("audit: " + what);
    throw AuditUnavailable("audit: " + what);
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
  AuditLogStats stats = stats_;
  stats.down = broken_;
  return stats;
}

}  // namespace kms::audit
