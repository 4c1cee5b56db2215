#include "kms/audit/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "kms/audit/audit_record.h"
#include "kms/audit/audit_segment.h"

namespace kms::audit {
namespace {

namespace fs = std::filesystem;

constexpr off_t kTailBlock = 64 * 1024;  // records are far smaller than this

std::string errno_text(int error) { return std::strerror(error); }

// A rename that did not happen: the live file is unchanged and takes the records.
class RotationSkipped : public AuditUnavailable {
 public:
  using AuditUnavailable::AuditUnavailable;
};

std::string directory_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// A rename or a new file is durable only once its directory is.
void fsync_directory(const std::string& path) {
  const std::string directory = directory_of(path);
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    throw AuditUnavailable("audit: cannot open the directory " + directory + ": " +
                           errno_text(errno));
  }
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (synced != 0) {
    throw AuditUnavailable("audit: fsync of the directory " + directory +
                           " failed: " + errno_text(error));
  }
}

// The first line and the last complete line of a file (each within its first / last 64 KiB).
struct FileEnds {
  std::string first;
  std::string last;
};
std::optional<FileEnds> read_file_ends(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat info {};
  std::optional<FileEnds> result;
  if (::fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && info.st_size > 0) {
    const off_t size = info.st_size;
    const auto read_at = [&](off_t start, off_t length) {
      std::string data(static_cast<std::size_t>(length), '\0');
      const ssize_t n = ::pread(fd, data.data(), data.size(), start);
      data.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
      return data;
    };
    const std::string head = read_at(0, std::min(size, kTailBlock));
    std::string tail =
        read_at(size > kTailBlock ? size - kTailBlock : 0, std::min(size, kTailBlock));
    const auto first_end = head.find('\n');
    const auto last_end = tail.rfind('\n');
    if (first_end != std::string::npos && last_end != std::string::npos) {
      tail.resize(last_end);
      const auto previous = tail.rfind('\n');
      result = FileEnds{head.substr(0, first_end),
                        previous == std::string::npos ? tail : tail.substr(previous + 1)};
    }
  }
  ::close(fd);
  return result;
}

// "2026-11-30T10:35:00.123Z" -> its time (seconds); nullopt if it is not one.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& text) {
  std::tm tm{};
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const std::time_t t = ::timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace

AuditLog::LiveFile AuditLog::open_live_file(bool create_exclusive) const {
  // A new log is the KMS user's alone: mode 0600 whatever the umask (which could only take
  // bits away, the owner's write bit included).
  int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  const bool created = fd >= 0;
  if (!created && errno == EEXIST && !create_exclusive) {
    fd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  }
  if (fd < 0) {
    throw AuditUnavailable("audit: cannot open " + path_ + ": " + errno_text(errno));
  }
  if (created && ::fchmod(fd, 0600) != 0) {
    const int error = errno;
    ::close(fd);
    throw AuditUnavailable("audit: cannot chmod " + path_ + ": " + errno_text(error));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    throw AuditUnavailable("audit: cannot stat " + path_ + ": " + errno_text(error));
  }
  const bool regular = S_ISREG(info.st_mode);
  // One writer per log: a second process appending with its own idea of the chain's head
  // would break the chain.
  if (regular && ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd);
    throw AuditUnavailable("audit: " + path_ + " is in use by another process (" +
                           errno_text(error) + ")");
  }
  return {fd, regular};
}

AuditLog::AuditLog(std::string path, AuditLogOptions options)
    : path_(std::move(path)),
      options_(std::move(options)),
      segment_base_{0, std::string(kGenesisHash)},
      head_(kGenesisHash) {
  const LiveFile live = open_live_file(false);
  fd_ = live.fd;
  regular_file_ = live.regular;
  journaling_ = options_.sync_interval.count() > 0 && regular_file_;
  if (journaling_) journal_log_ = fs::absolute(path_).lexically_normal().string();
  try {
    if (regular_file_) resume();
  } catch (...) {
    ::close(fd_);
    throw;
  }
  if (journaling_) sync_thread_ = std::thread([this] { background_sync_loop(); });
}

AuditLog::~AuditLog() {
  if (sync_thread_.joinable()) {
    {
      std::lock_guard lock(thread_mutex_);
      stopping_ = true;
    }
    thread_wake_.notify_all();
    sync_thread_.join();
  }
  if (fd_ >= 0) {
    // A clean stop leaves nothing for the journal to restore (best effort: a failure here
    // leaves the rows, and the next start appends what is missing).
    if (journaling_ && regular_file_ && !broken_ && synced_seq_ < seq_) (void)::fdatasync(fd_);
    ::close(fd_);
  }
}

void AuditLog::background_sync_loop() {
  std::unique_lock lock(thread_mutex_);
  while (!stopping_) {
    thread_wake_.wait_for(lock, options_.sync_interval, [&] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    {
      bool due = false;
      {
        std::lock_guard write_lock(write_mutex_);
        // Only for journaled records (to let their rows go): records no batch journaled
        // (unauthenticated refusals) keep their own, best-effort schedule.
        due = !broken_ && file_synced_.seq < journaled_.seq;
      }
      try {
        if (due) sync_now();
      } catch (const AuditUnavailable&) {
        // The log is failed (mark_failed): batches are refused until it resumes.
      }
    }
    lock.lock();
  }
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
  find_segment();
  if (tail.seq > 0) {
    seq_ = tail.seq;
    head_ = tail.hash;
  } else {  // empty: the chain goes on from the segment before (genesis if none)
    seq_ = segment_base_.seq;
    head_ = segment_base_.hash;
  }
  {
    std::lock_guard sync_lock(sync_mutex_);
    std::lock_guard lock(write_mutex_);
    note_synced_locked(seq_, head_);
    journaled_ = file_synced_;
    if (header_pending_) write_header_locked();
  }
  if (tail.torn_bytes > 0) {
    if (journaling_) {  // the journal's rows come first (restore_from_journal writes it)
      std::lock_guard lock(write_mutex_);
      pending_torn_bytes_ = tail.torn_bytes;
      return;
    }
    record({"audit_recovered", "ok", {{"torn_bytes_removed", std::to_string(tail.torn_bytes)}}});
  }
}

void AuditLog::find_segment() {
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size < 0) throw AuditUnavailable("audit: cannot seek in " + path_ + ": " + errno_text(errno));
  segment_bytes_ = static_cast<std::uint64_t>(size);
  if (size > 0) {
    std::string first(static_cast<std::size_t>(std::min(size, kTailBlock)), '\0');
    const ssize_t n = ::pread(fd_, first.data(), first.size(), 0);
    first.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    first.resize(std::min(first.find('\n'), first.size()));
    const std::optional<SegmentStart> start = parse_segment_start(first);
    if (start && start->header) {
      segment_ = start->number;
      segment_base_ = AuditHead{start->seq - 1, start->prev};
    }  // else segment 1 (a chain's first file; kms-audit verify explains anything else)
    segment_started_ = (start ? parse_rfc3339(start->time) : std::nullopt).value_or(now());
    return;
  }
  // A new live file: continue the newest chain beside it (kmsd's own rotated segments, or a
  // file a logrotate-style tool moved away while kmsd was stopped).
  segment_started_ = now();
  const fs::path live(path_);
  const std::string name = live.filename().string();
  std::error_code ec;
  std::optional<std::pair<std::uint64_t, AuditHead>> newest;  // segment number, its last record
  for (const auto& entry : fs::directory_iterator(directory_of(path_), ec)) {
    const std::string candidate = entry.path().filename().string();
    if (candidate.size() <= name.size() || !candidate.starts_with(name) ||
        (candidate[name.size()] != '.' && candidate[name.size()] != '-')) {
      continue;
    }
    const std::optional<FileEnds> ends = read_file_ends(entry.path().string());
    if (!ends) continue;
    const std::optional<SegmentStart> start = parse_segment_start(ends->first);
    const LineHash hash = line_hash(ends->last);
    boost::system::error_code parse_error;
    const boost::json::value last = boost::json::parse(ends->last, parse_error);
    const auto* seq =
        (!parse_error && last.is_object()) ? last.as_object().if_contains("seq") : nullptr;
    if (!start || !hash.ok() || !seq || !seq->is_int64()) continue;  // not a segment (.gz, ...)
    const AuditHead end{static_cast<std::uint64_t>(seq->as_int64()), hash.claimed};
    if (!newest || end.seq > newest->second.seq) newest.emplace(start->number, end);
  }
  if (newest) {
    segment_ = newest->first + 1;
    segment_base_ = newest->second;
    header_pending_ = true;
    pending_reason_ = "start";
  }
}

std::chrono::system_clock::time_point AuditLog::now() const {
  return options_.clock ? options_.clock() : std::chrono::system_clock::now();
}

bool AuditLog::rotation_due() const {
  if (!regular_file_ || broken_ || header_pending_ || new_file_pending_) return false;
  const bool by_size = options_.rotate_bytes > 0;
  const bool by_age = options_.rotate_age.count() > 0;
  if (!by_size && !by_age) return false;
  // Nothing beyond the header (segment 1 has none): rotating would make an empty segment.
  if (seq_ <= segment_base_.seq + (segment_ > 1 ? 1 : 0)) return false;
  if (Clock::now() < next_rotation_attempt_) return false;
  return (by_size && segment_bytes_ >= options_.rotate_bytes) ||
         (by_age && now() - segment_started_ >= options_.rotate_age);
}

void AuditLog::maybe_rotate() {
  {
    std::lock_guard lock(write_mutex_);
    if (!rotation_due()) return;
  }
  std::lock_guard sync_lock(sync_mutex_);
  std::lock_guard lock(write_mutex_);
  if (!rotation_due()) return;  // another caller rotated meanwhile
  const bool by_size = options_.rotate_bytes > 0 && segment_bytes_ >= options_.rotate_bytes;
  try {
    rotate_locked(by_size ? "size" : "age");
  } catch (const RotationSkipped&) {
    // Not renamed: the records go on in the live file (rotation_failures counts it).
  }
}

std::string AuditLog::rotate() {
  std::lock_guard sync_lock(sync_mutex_);
  std::lock_guard lock(write_mutex_);
  if (!regular_file_) throw AuditUnavailable("audit: " + path_ + " is not a regular file");
  if (broken_) {
    throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ + "); not rotated");
  }
  return rotate_locked("request");
}

std::string AuditLog::rotate_locked(std::string_view reason) {
  sync_all_locked();
  const std::string target = segment_path(path_, segment_);
  if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0) {
    const int error = errno;
    ++stats_.rotation_failures;
    next_rotation_attempt_ = Clock::now() + options_.retry_interval;
    throw RotationSkipped("audit: cannot rename " + path_ + " to " + target + ": " +
                          errno_text(error));
  }
  // From here on the live name is gone: anything that fails fails the log (fail closed);
  // resuming opens the new live file and writes its header before anything else.
  pending_reason_ = std::string(reason);
  try {
    fsync_directory(path_);
    const LiveFile live = open_live_file(true);
    start_segment(live.fd);
  } catch (const AuditUnavailable& error) {
    if (!broken_) {
      new_file_pending_ = true;
      header_pending_ = true;
      mark_failed(error.what());
    }
    throw;
  }
  return target;
}

void AuditLog::sync_all_locked() {
  if (synced_seq_ == seq_) return;
  if (regular_file_ && ::fdatasync(fd_) != 0) {
    const std::string what = "audit: fdatasync of " + path_ + " failed: " + errno_text(errno);
    mark_failed(what);
    throw AuditUnavailable(what);
  }
  note_synced_locked(seq_, head_);
  ++stats_.syncs;
}

void AuditLog::note_synced_locked(std::uint64_t seq, const std::string& hash) {
  synced_seq_ = seq;
  synced_hash_ = hash;
  file_synced_ = AuditHead{seq, hash};
  while (!unsynced_.empty() && unsynced_.front().seq <= seq) unsynced_.pop_front();
}

void AuditLog::track_written_locked(std::uint64_t seq, const std::string& hash, std::string line) {
  if (journaling_) unsynced_.push_back(AuditJournalLine{seq, hash, std::move(line)});
}

void AuditLog::adopt_live_file(int fd) {
  ::close(fd_);  // every record in it is synced (sync_all_locked); drops its lock
  fd_ = fd;
  regular_file_ = true;
  new_file_pending_ = false;
  ++segment_;
  segment_base_ = AuditHead{seq_, head_};
  segment_bytes_ = 0;
  segment_started_ = now();
  header_pending_ = true;
  ++stats_.rotations;
}

void AuditLog::start_segment(int fd) {
  adopt_live_file(fd);
  try {
    write_header_locked();
  } catch (const AuditUnavailable& error) {
    mark_failed(error.what());
    throw;
  }
}

void AuditLog::write_header_locked() {
  const std::uint64_t seq = seq_ + 1;
  std::string line = format_record(seq, utc_rfc3339(now()), head_,
                                   segment_header_event(segment_, segment_base_, pending_reason_));
  const std::string hash = line_hash(line).claimed;
  write_line(line + '\n');
  segment_bytes_ += line.size() + 1;
  track_written_locked(seq, hash, std::move(line));
  seq_ = seq;
  head_ = hash;
  ++stats_.records;
  if (::fdatasync(fd_) != 0) {
    throw AuditUnavailable("audit: fdatasync of " + path_ + " failed: " + errno_text(errno));
  }
  note_synced_locked(seq, hash);
  ++stats_.syncs;
  fsync_directory(path_);
  header_pending_ = false;
}

ReopenResult AuditLog::reopen() {
  using Outcome = ReopenResult::Outcome;
  std::lock_guard sync_lock(sync_mutex_);
  std::lock_guard lock(write_mutex_);
  if (!regular_file_) return {Outcome::unchanged, path_ + " is not a regular file"};
  struct stat at_path {};
  struct stat written {};
  if (::stat(path_.c_str(), &at_path) == 0 && ::fstat(fd_, &written) == 0 &&
      at_path.st_dev == written.st_dev && at_path.st_ino == written.st_ino) {
    return {Outcome::unchanged, path_ + " is the file being written"};
  }
  if (broken_) {
    return {Outcome::failed, "the log is failed (" + failure_ + "); reopen once it has resumed"};
  }
  const std::string keep_going = "; the records go on in the moved file";
  LiveFile live;
  try {
    sync_all_locked();
    live = open_live_file(false);
  } catch (const AuditUnavailable& error) {
    return {Outcome::failed, error.what() + (broken_ ? std::string() : keep_going)};
  }
  const off_t size = ::lseek(live.fd, 0, SEEK_END);
  if (!live.regular || size != 0) {
    ::close(live.fd);
    return {Outcome::failed, path_ + " is not an empty regular file (" +
                                 std::to_string(static_cast<long long>(size)) +
                                 " bytes); not taken" + keep_going};
  }
  pending_reason_ = "reopen";
  try {
    start_segment(live.fd);
  } catch (const AuditUnavailable& error) {
    return {Outcome::failed, error.what()};
  }
  return {Outcome::reopened, "segment " + std::to_string(segment_) + " started at " + path_ +
                                 " (continues from seq " + std::to_string(segment_base_.seq) + ")"};
}

void AuditLog::record(const AuditEvent& event) {
  ensure_writable(true);
  maybe_rotate();
  sync_through(append_record(event));
}

void AuditLog::append(const AuditEvent& event) {
  ensure_writable(true);
  maybe_rotate();
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
  failed_at_ = utc_rfc3339(now());
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
  if (regular_file_ && new_file_pending_) {  // renamed away, no new live file yet
    const LiveFile live = open_live_file(false);
    const off_t size = ::lseek(live.fd, 0, SEEK_END);
    if (size != 0) {
      ::close(live.fd);
      throw AuditUnavailable("audit: " + path_ + " was made by someone else (" +
                             std::to_string(static_cast<long long>(size)) + " bytes)");
    }
    adopt_live_file(live.fd);
  }
  Tail tail;
  if (regular_file_) {
    tail = read_tail();
    if (tail.seq == 0) {  // an empty live file: the chain ends in the segment before it
      tail.seq = segment_base_.seq;
      tail.hash = segment_base_.hash;
    }
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
    const off_t size = ::lseek(fd_, 0, SEEK_END);
    segment_bytes_ = size > 0 ? static_cast<std::uint64_t>(size) : 0;
    if (journaling_) rewrite_journaled_locked();
    // A new segment's header lost with a torn write: written again before anything else.
    if (segment_ > 1 && seq_ == segment_base_.seq) header_pending_ = true;
    if (header_pending_) write_header_locked();
  }
  const AuditEvent event{"audit_recovered",
                         "ok",
                         {{"error", failure_},
                          {"failed_at", failed_at_},
                          {"refused", std::to_string(outage_refusals_)},
                          {"last_durable_seq", std::to_string(synced_seq_)},
                          {"torn_bytes_removed", std::to_string(tail.torn_bytes)}}};
  const std::uint64_t seq = seq_ + 1;
  std::string line = format_record(seq, utc_rfc3339(now()), head_, event);
  const std::string hash = line_hash(line).claimed;
  write_line(line + '\n');  // throws: still failed (a torn piece is cut next time)
  segment_bytes_ += line.size() + 1;
  track_written_locked(seq, hash, std::move(line));
  seq_ = seq;
  head_ = hash;
  ++stats_.records;
  if (regular_file_ && ::fdatasync(fd_) != 0) {
    throw AuditUnavailable("audit: fdatasync of " + path_ + " failed: " + errno_text(errno));
  }
  note_synced_locked(seq, hash);
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
  if (pending_torn_bytes_ > 0) {  // journaled mode, restore_from_journal() not called
    const std::uint64_t torn = std::exchange(pending_torn_bytes_, 0);
    (void)write_event_locked(
        {"audit_recovered", "ok", {{"torn_bytes_removed", std::to_string(torn)}}});
  }
  return write_event_locked(event);
}

std::uint64_t AuditLog::write_event_locked(const AuditEvent& event) {
  const std::uint64_t seq = seq_ + 1;
  std::string line = format_record(seq, utc_rfc3339(now()), head_, event);
  const std::string hash = line_hash(line).claimed;
  try {
    write_line(line + '\n');
  } catch (const AuditUnavailable& error) {
    mark_failed(error.what());
    throw;
  }
  segment_bytes_ += line.size() + 1;
  track_written_locked(seq, hash, std::move(line));
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
  std::lock_guard lock(write_mutex_);
  note_synced_locked(covered, covered_hash);
  ++stats_.syncs;
}

void AuditLog::sync_now() {
  std::uint64_t through = 0;
  {
    std::lock_guard lock(write_mutex_);
    through = seq_;
  }
  sync_through(through);
}

std::optional<AuditJournal> AuditLog::prepare_journal() {
  if (!journaling_) return std::nullopt;
  ensure_writable(true);
  std::lock_guard lock(write_mutex_);
  if (broken_) {  // an append failed: what was appended since is not durable
    ++stats_.failures;
    ++outage_refusals_;
    throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ +
                           "); records not durable");
  }
  AuditJournal journal;
  journal.log = journal_log_;
  const AuditHead& durable = journaled_.seq > file_synced_.seq ? journaled_ : file_synced_;
  for (const AuditJournalLine& line : unsynced_) {
    if (line.seq > durable.seq) journal.lines.push_back(line);
  }
  journal.head = journal.lines.empty()
                     ? durable
                     : AuditHead{journal.lines.back().seq, journal.lines.back().hash};
  journal.synced_seq = file_synced_.seq;
  return journal;
}

std::string AuditLog::journal_log() const { return journal_log_; }

void AuditLog::journal_committed(const AuditJournal& journal) {
  std::lock_guard lock(write_mutex_);
  ++stats_.journals;
  if (journal.head.seq > journaled_.seq && journal.head.seq <= seq_) journaled_ = journal.head;
}

// After a failed fdatasync the file may have lost records a batch journaled (the kernel
// dropped their pages): they are written again from memory, exactly as journaled.
void AuditLog::rewrite_journaled_locked() {
  for (AuditJournalLine& line : unsynced_) {
    if (line.seq <= seq_) continue;
    if (line.seq > journaled_.seq) break;
    if (line.seq != seq_ + 1) {
      throw AuditUnavailable("audit: " + path_ + " ends at seq " + std::to_string(seq_) +
                             " and the journaled records resume at seq " +
                             std::to_string(line.seq));
    }
    write_line(line.line + '\n');
    segment_bytes_ += line.line.size() + 1;
    seq_ = line.seq;
    head_ = line.hash;
  }
  // Records after the journaled ones that the file lost were never acknowledged.
  while (!unsynced_.empty() && unsynced_.back().seq > seq_) unsynced_.pop_back();
}

std::uint64_t AuditLog::restore_from_journal(const std::vector<AuditJournalLine>& rows) {
  std::uint64_t torn = 0;
  {
    std::lock_guard sync_lock(sync_mutex_);
    std::lock_guard lock(write_mutex_);
    if (broken_) {
      throw AuditUnavailable("audit: log " + path_ + " failed (" + failure_ +
                             "); the registry's journal is not restored");
    }
    std::uint64_t appended = 0;
    for (const AuditJournalLine& row : rows) {
      if (row.seq < seq_) continue;
      const std::string where =
          "audit: the registry's journal row seq " + std::to_string(row.seq) + " for " + path_;
      if (row.seq == seq_) {
        if (row.hash != head_) {
          throw AuditUnavailable(where + " differs from the file's record " + std::to_string(seq_) +
                                 ": run kms-audit verify --anchor-db");
        }
        continue;
      }
      if (row.seq != seq_ + 1) {
        throw AuditUnavailable(where + " does not continue the file, which ends at seq " +
                               std::to_string(seq_) + ": records are missing");
      }
      const LineHash hash = line_hash(row.line);
      boost::system::error_code ec;
      const boost::json::value value = boost::json::parse(row.line, ec);
      const auto* object = (!ec && value.is_object()) ? &value.as_object() : nullptr;
      const auto* seq = object ? object->if_contains("seq") : nullptr;
      const auto* prev = object ? object->if_contains("prev") : nullptr;
      if (!hash.ok() || hash.claimed != row.hash || !seq || !seq->is_int64() ||
          static_cast<std::uint64_t>(seq->as_int64()) != row.seq || !prev || !prev->is_string() ||
          prev->as_string() != head_) {
        throw AuditUnavailable(where + " is not the record that continues its chain (altered?)");
      }
      write_line(row.line + '\n');
      segment_bytes_ += row.line.size() + 1;
      seq_ = row.seq;
      head_ = row.hash;
      ++appended;
    }
    if (appended > 0) {
      sync_all_locked();
      stats_.restored += appended;
    }
    journaled_ = AuditHead{seq_, head_};
    torn = std::exchange(pending_torn_bytes_, 0);
  }
  if (torn > 0) {  // the torn-tail note held back at open (it needs its own seq)
    record({"audit_recovered", "ok", {{"torn_bytes_removed", std::to_string(torn)}}});
  }
  std::lock_guard sync_lock(sync_mutex_);
  return synced_seq_;
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
  stats.segment = segment_;
  return stats;
}

}  // namespace kms::audit
