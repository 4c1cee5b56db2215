// Audit log segments (kms/audit/audit_segment.h): rotation by size under concurrent writers
// and by age, the chain continued across segments and restarts, reopen after the file was
// moved away (logrotate), a failed rotation that resumes, and kms-audit verify over a
// sequence of segments: a missing, swapped, duplicated, truncated or rewritten segment each
// reported by name with exit 1; an archived range verified with --from-head.
#include "kms/audit/audit_segment.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "file_size_limit.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/audit_record.h"
#include "kms/audit/audit_verify.h"

namespace fs = std::filesystem;
using kms::AuditEvent;
using kms::AuditUnavailable;
using kms::audit::AuditLog;
using kms::audit::AuditLogOptions;
using kms::audit::ReopenResult;
using kms::audit::segment_files_in;
using kms::audit::verify_segments;
using kmstest::FileSizeLimit;

namespace {

AuditEvent release(int i) {
  return {"key_release",
          "ok",
          {{"bridge", "sip:bridge1@ims.example.net"},
           {"conference", "00112233445566778899aabbccddeeff"},
           {"member", "m" + std::to_string(i)}}};
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> result;
  for (std::string line; std::getline(in, line);) result.push_back(line);
  return result;
}

void write_lines(const std::string& path, const std::vector<std::string>& content) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  for (const auto& line : content) out << line << '\n';
}

boost::json::object record_of(const std::string& line) {
  return boost::json::parse(line).as_object();
}

// Polls `condition` until it holds (30 s at most): for waiting on events, never on durations.
bool wait_for(const std::function<bool()>& condition) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::pair<int, std::string> run(const std::string& command) {
  std::array<char, 512> buffer{};
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, {}};
  while (fgets(buffer.data(), buffer.size(), pipe)) out += buffer.data();
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class AuditSegmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kms-audit-segments-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = (dir_ / "audit.log").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string segment(std::uint64_t number) const {
    return kms::audit::segment_path(path_, number);
  }
  // Every member value recorded, over every segment, in chain (seq) order.
  std::vector<std::string> members() const {
    std::vector<std::pair<std::int64_t, std::string>> by_seq;  // a seq twice stays twice
    for (const auto& file : segment_files_in(dir_.string())) {
      for (const auto& line : lines_of(file)) {
        const auto record = record_of(line);
        if (record.at("event").as_string() != "key_release") continue;
        by_seq.emplace_back(record.at("seq").as_int64(),
                            std::string(record.at("fields").at("member").as_string()));
      }
    }
    std::sort(by_seq.begin(), by_seq.end());
    std::vector<std::string> result;
    for (auto& [seq, member] : by_seq) result.push_back(std::move(member));
    return result;
  }
  // Four segments: 1-3 rotated (three records each, after the header), the live one with two.
  void write_four_segments() {
    AuditLog log(path_);
    int i = 0;
    for (int s = 0; s < 3; ++s) {
      for (int r = 0; r < 3; ++r) log.record(release(i++));
      log.rotate();
    }
    log.record(release(i++));
    log.record(release(i++));
  }
  std::pair<int, std::string> verify(const std::string& arguments) const {
    return run(std::string(KMS_AUDIT_BIN) + " verify " + arguments);
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(AuditSegmentTest, RotationBySizeUnderConcurrentWritersLosesAndDuplicatesNothing) {
  AuditLogOptions options;
  options.rotate_bytes = 4096;
  constexpr int kThreads = 8, kPerThread = 60;
  {
    AuditLog log(path_, options);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kPerThread; ++i) {
          if (i % 3 == 0) {  // the group-commit path too
            log.append(release(t * 1000 + i));
            log.sync();
          } else {
            log.record(release(t * 1000 + i));
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    const auto stats = log.stats();
    EXPECT_GE(stats.rotations, 5u);
    EXPECT_EQ(stats.segment, stats.rotations + 1);
    EXPECT_EQ(stats.rotation_failures, 0u);
    EXPECT_EQ(stats.records, kThreads * kPerThread + stats.rotations);  // + one header each
    ASSERT_TRUE(log.head());
    EXPECT_EQ(log.head()->seq, stats.records);
  }
  const auto files = segment_files_in(dir_.string());
  std::vector<kms::audit::SegmentReport> report;
  const auto result = verify_segments(files, {}, {}, &report);
  ASSERT_TRUE(result.ok) << result.file << ": " << result.problem;
  ASSERT_EQ(report.size(), files.size());
  for (std::size_t i = 0; i + 1 < report.size(); ++i) {
    EXPECT_EQ(report[i].number, i + 1);
    EXPECT_EQ(report[i].file, segment(i + 1));
    EXPECT_GE(fs::file_size(report[i].file), options.rotate_bytes) << report[i].file;
    EXPECT_EQ(report[i + 1].first_seq, report[i].last_seq + 1);
  }
  EXPECT_EQ(report.back().file, path_);
  // Every record once, none lost.
  const auto recorded = members();
  ASSERT_EQ(recorded.size(), std::size_t{kThreads * kPerThread});
  std::set<std::string> unique(recorded.begin(), recorded.end());
  EXPECT_EQ(unique.size(), recorded.size());
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      EXPECT_TRUE(unique.contains("m" + std::to_string(t * 1000 + i)));
    }
  }
  // Each later segment starts with its header, continuing the segment before.
  for (std::size_t i = 1; i < report.size(); ++i) {
    const auto header = record_of(lines_of(report[i].file).at(0));
    EXPECT_EQ(header.at("event").as_string(), "audit_segment");
    EXPECT_EQ(header.at("fields").at("segment").as_string(), std::to_string(i + 1));
    EXPECT_EQ(header.at("fields").at("reason").as_string(), "size");
    EXPECT_EQ(header.at("fields").at("previous_last_hash").as_string(), report[i - 1].last_hash);
    EXPECT_EQ(header.at("prev").as_string(), report[i - 1].last_hash);
  }
  const auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ok: " + std::to_string(files.size()) + " segments"), std::string::npos)
      << out;
}

TEST_F(AuditSegmentTest, RotationByAgeOfTheFirstRecord) {
  auto now = std::chrono::system_clock::now();
  AuditLogOptions options;
  options.rotate_age = std::chrono::seconds(3600);
  options.clock = [&now] { return now; };
  {
    AuditLog log(path_, options);
    log.record(release(1));
    now += std::chrono::seconds(3599);
    log.record(release(2));
    EXPECT_EQ(log.stats().segment, 1u);
    now += std::chrono::seconds(1);
    log.record(release(3));  // the segment is an hour old: rotated before this record
    EXPECT_EQ(log.stats().segment, 2u);
  }
  EXPECT_EQ(lines_of(segment(1)).size(), 2u);
  const auto live = lines_of(path_);
  ASSERT_EQ(live.size(), 2u);
  EXPECT_EQ(record_of(live[0]).at("fields").at("reason").as_string(), "age");
  // A restart keeps the segment's age (from its first record's time), not the restart's.
  now += std::chrono::seconds(3000);
  {
    AuditLog log(path_, options);
    EXPECT_EQ(log.stats().segment, 2u);
    log.record(release(4));
    EXPECT_EQ(log.stats().segment, 2u);
    now += std::chrono::seconds(600);
    log.record(release(5));
    EXPECT_EQ(log.stats().segment, 3u);
  }
  EXPECT_TRUE(verify_segments(segment_files_in(dir_.string())).ok);
}

TEST_F(AuditSegmentTest, RestartContinuesTheSegmentsChain) {
  {
    AuditLog log(path_);
    log.record(release(1));
    EXPECT_EQ(log.rotate(), segment(1));
    log.record(release(2));
  }
  {
    AuditLog log(path_);  // resumes segment 2 (its header says so)
    EXPECT_EQ(log.stats().segment, 2u);
    EXPECT_EQ(log.rotate(), segment(2));
  }
  // Moved away by a logrotate-style tool while kmsd was stopped: a new live file continues
  // the newest segment beside it, header first.
  fs::rename(path_, path_ + ".1");
  {
    AuditLog log(path_);
    EXPECT_EQ(log.stats().segment, 4u);
    ASSERT_TRUE(log.head());
    EXPECT_EQ(log.head()->seq, 5u);  // m1, header, m2, header (in audit.log.1), its header
    log.record(release(3));
  }
  EXPECT_EQ(record_of(lines_of(path_).at(0)).at("fields").at("reason").as_string(), "start");
  const auto result = verify_segments(segment_files_in(dir_.string()));
  EXPECT_TRUE(result.ok) << result.file << ": " << result.problem;
  EXPECT_EQ(members(), (std::vector<std::string>{"m1", "m2", "m3"}));
}

TEST_F(AuditSegmentTest, ReopenAfterTheFileWasMovedAwayStartsASegmentThatContinuesTheChain) {
  AuditLog log(path_);
  log.record(release(1));
  EXPECT_EQ(log.reopen().outcome, ReopenResult::Outcome::unchanged);  // nothing moved

  // logrotate without `create`: moved away, no file at the path.
  fs::rename(path_, dir_ / "audit.log.1");
  log.append(release(2));  // written before the signal: still in the moved file
  ReopenResult reopened = log.reopen();
  ASSERT_EQ(reopened.outcome, ReopenResult::Outcome::reopened) << reopened.detail;
  log.sync();
  log.record(release(3));
  EXPECT_EQ(log.stats().segment, 2u);

  // logrotate's `create`: moved away, an empty file made in its place before the signal.
  fs::rename(path_, dir_ / "audit.log.2");
  { std::ofstream created(path_); }
  log.record(release(4));
  reopened = log.reopen();
  ASSERT_EQ(reopened.outcome, ReopenResult::Outcome::reopened) << reopened.detail;
  log.record(release(5));

  // A file at the path that already holds something is not taken: the records go on in
  // the moved file, and the chain stays whole.
  fs::rename(path_, dir_ / "audit.log.3");
  write_lines(path_, {"someone else's line"});
  reopened = log.reopen();
  EXPECT_EQ(reopened.outcome, ReopenResult::Outcome::failed);
  EXPECT_NE(reopened.detail.find("not taken"), std::string::npos) << reopened.detail;
  log.record(release(6));
  EXPECT_FALSE(log.stats().down);
  fs::remove(path_);

  EXPECT_EQ(lines_of((dir_ / "audit.log.1").string()).size(), 2u);
  const auto files = segment_files_in(dir_.string());
  ASSERT_EQ(files.size(), 3u);
  const auto result = verify_segments(files);
  EXPECT_TRUE(result.ok) << result.file << ": " << result.problem;
  EXPECT_EQ(members(), (std::vector<std::string>{"m1", "m2", "m3", "m4", "m5", "m6"}));
  const auto header = record_of(lines_of((dir_ / "audit.log.2").string()).at(0));
  EXPECT_EQ(header.at("fields").at("reason").as_string(), "reopen");
}

TEST_F(AuditSegmentTest, ReopenUnderConcurrentWritersLosesNothing) {
  AuditLog log(path_);
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::vector<std::thread> writers;
  // Stops and joins the writers however this test ends (a failed ASSERT returns early).
  struct JoinOnExit {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~JoinOnExit() {
      stop = true;
      for (auto& thread : threads) {
        if (thread.joinable()) thread.join();
      }
    }
  } join_on_exit{stop, writers};
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        log.record(release(t * 100000 + i));
        ++written;
      }
    });
  }
  for (int move = 1; move <= 5; ++move) {
    const int before = written;
    ASSERT_TRUE(wait_for([&] { return written > before + 10; }));
    fs::rename(path_, dir_ / ("audit.log.moved" + std::to_string(move)));
    ASSERT_EQ(log.reopen().outcome, ReopenResult::Outcome::reopened);
  }
  stop = true;
  for (auto& writer : writers) writer.join();
  const auto files = segment_files_in(dir_.string());
  EXPECT_EQ(files.size(), 6u);
  const auto result = verify_segments(files);
  EXPECT_TRUE(result.ok) << result.file << ": " << result.problem;
  const auto recorded = members();
  EXPECT_EQ(recorded.size(), static_cast<std::size_t>(written.load()));
  EXPECT_EQ(std::set<std::string>(recorded.begin(), recorded.end()).size(), recorded.size());
}

// A rotation whose new live file cannot take its header (the disk is full) fails the log;
// once it can, the log resumes with the header first, then the record of the failure.
TEST_F(AuditSegmentTest, ARotationThatFailsHalfwayResumesWithTheHeaderFirst) {
  AuditLogOptions options;
  options.retry_interval = std::chrono::milliseconds(0);
  AuditLog log(path_, options);
  log.record(release(1));
  {
    FileSizeLimit limit(60);  // the old file is larger: only the new header's write fails
    EXPECT_THROW(log.rotate(), AuditUnavailable);
    EXPECT_TRUE(log.stats().down);
    EXPECT_THROW(log.record(release(2)), AuditUnavailable);
  }
  log.record(release(3));
  EXPECT_FALSE(log.stats().down);
  const auto live = lines_of(path_);
  ASSERT_EQ(live.size(), 3u);
  EXPECT_EQ(record_of(live[0]).at("event").as_string(), "audit_segment");
  EXPECT_EQ(record_of(live[1]).at("event").as_string(), "audit_recovered");
  const auto result = verify_segments(segment_files_in(dir_.string()));
  EXPECT_TRUE(result.ok) << result.file << ": " << result.problem;
  EXPECT_EQ(members(), (std::vector<std::string>{"m1", "m3"}));
}

TEST_F(AuditSegmentTest, ASegmentsLogVerifiesFromADirectoryOrAListInAnyOrder) {
  write_four_segments();
  auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ok: 4 segments, 14 records, last seq 14"), std::string::npos) << out;
  EXPECT_NE(out.find("segment 2: " + segment(2) + ": seq 4..7"), std::string::npos) << out;
  std::tie(code, out) = verify(path_ + " " + segment(3) + " " + segment(1) + " " + segment(2));
  EXPECT_EQ(code, 0) << out;
  // The live file alone is not the chain: its earlier segments are missing.
  std::tie(code, out) = verify(path_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("segments 1 to 3 are missing"), std::string::npos) << out;
}

TEST_F(AuditSegmentTest, AMissingMiddleSegmentIsReportedByName) {
  write_four_segments();
  fs::remove(segment(2));
  const auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_EQ(out, "BROKEN: " + segment(3) + ": segment 2 is missing: " + segment(1) +
                     " (segment 1) is followed by " + segment(3) + " (segment 3)\n");
}

TEST_F(AuditSegmentTest, SwappedSegmentsAreReportedByName) {
  write_four_segments();
  fs::rename(segment(1), dir_ / "swap");
  fs::rename(segment(2), segment(1));
  fs::rename(dir_ / "swap", segment(2));
  const auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("BROKEN: " + segment(2) +
                     ": holds segment 1 but its name says segment 2 "
                     "(segments renamed or swapped)"),
            std::string::npos)
      << out;
}

TEST_F(AuditSegmentTest, ASegmentTwiceIsReported) {
  write_four_segments();
  fs::copy_file(segment(2), segment(2) + ".copy");
  const auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("holds segment 2, as "), std::string::npos) << out;
}

TEST_F(AuditSegmentTest, ATruncatedLastSegmentIsDetected) {
  write_four_segments();
  const std::string full = [&] {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  const auto all = verify_segments(segment_files_in(dir_.string()));
  ASSERT_TRUE(all.ok) << all.problem;
  const kms::AuditHead anchor{all.last_seq, all.head_hash};

  // Cut inside its last record: a torn line.
  fs::resize_file(path_, full.size() - 10);
  auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("BROKEN: " + path_ + ": line 3: no hash field (truncated"), std::string::npos)
      << out;

  // Cut at a record boundary: a valid chain, but the anchor is not in it.
  write_lines(path_, {full.substr(0, full.find('\n'))});  // the header alone
  std::tie(code, out) = verify(dir_.string());
  EXPECT_EQ(code, 0) << out;
  const auto cut = verify_segments(segment_files_in(dir_.string()), anchor);
  EXPECT_FALSE(cut.ok);
  EXPECT_TRUE(cut.anchor_missing);
  EXPECT_EQ(cut.file, path_);
  EXPECT_EQ(cut.problem, "audit log truncated or altered: anchored seq 14 (hash " + anchor.hash +
                             ") not found (the log ends at seq 12)");
  // A middle segment cut at a record boundary: the next header does not continue it.
  auto third = lines_of(segment(3));
  third.pop_back();
  write_lines(segment(3), third);
  std::tie(code, out) = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("BROKEN: " + path_ +
                     ": line 1: segment 4 does not continue the segment "
                     "before it: that one ends at seq 10"),
            std::string::npos)
      << out;
}

TEST_F(AuditSegmentTest, ARewrittenRecordInAnOldSegmentIsDetected) {
  write_four_segments();
  // Changed in place: its own hash no longer matches.
  auto first = lines_of(segment(1));
  const auto original = first;
  first[1].replace(first[1].find("\"m1\""), 4, "\"mX\"");
  write_lines(segment(1), first);
  auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("BROKEN: " + segment(1) +
                     ": line 2: hash does not match the record's "
                     "content (record altered)"),
            std::string::npos)
      << out;
  // Its last record rewritten with a recomputed hash: the chain inside the segment holds, the
  // next segment's header does not continue it.
  first = original;
  std::string body = first.back().substr(0, first.back().find(kms::audit::kHashMarker));
  body.replace(body.find("\"m2\""), 4, "\"mY\"");
  first.back() = body + std::string(kms::audit::kHashMarker) + kms::audit::sha256_hex(body) + "\"}";
  write_lines(segment(1), first);
  std::tie(code, out) = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("BROKEN: " + segment(2) +
                     ": line 1: segment 2 does not continue the "
                     "segment before it"),
            std::string::npos)
      << out;
}

TEST_F(AuditSegmentTest, AnArchivedRangeVerifiesFromItsHead) {
  write_four_segments();
  std::vector<kms::audit::SegmentReport> report;
  ASSERT_TRUE(verify_segments(segment_files_in(dir_.string()), {}, {}, &report).ok);
  ASSERT_EQ(report.size(), 4u);
  const std::string archived_head = report[1].last_hash;  // segments 1 and 2 archived away
  fs::create_directory(dir_ / "archive");
  for (int n : {1, 2}) fs::rename(segment(n), dir_ / "archive" / fs::path(segment(n)).filename());

  auto [code, out] = verify(dir_.string());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("segments 1 to 2 are missing (archived? verify the rest with --from-head "
                     "HASH, the last hash of segment 2)"),
            std::string::npos)
      << out;
  std::tie(code, out) = verify(dir_.string() + " --from-head " + archived_head);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ok: 2 segments"), std::string::npos) << out;
  const std::string other = report[0].last_hash;
  std::tie(code, out) = verify(dir_.string() + " --from-head " + other);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("does not continue from --from-head " + other), std::string::npos) << out;
  std::tie(code, out) = verify(dir_.string() + " --from-head nothex");
  EXPECT_EQ(code, 2) << out;
  // The archive and the rest together are the whole chain again.
  std::tie(code, out) = verify((dir_ / "archive").string() + " " + dir_.string());
  EXPECT_EQ(code, 0) << out;
}

TEST(AuditSegmentNames, SortAndParse) {
  EXPECT_EQ(kms::audit::segment_path("/var/lib/kms/audit.log", 7), "/var/lib/kms/audit.log.000007");
  EXPECT_EQ(kms::audit::segment_path("a", 1234567), "a.1234567");
  EXPECT_EQ(kms::audit::segment_number_in_name("audit.log.000042"), 42u);
  EXPECT_EQ(kms::audit::segment_number_in_name("audit.log.1"), std::nullopt);  // logrotate's
  EXPECT_EQ(kms::audit::segment_number_in_name("audit.log"), std::nullopt);
  EXPECT_EQ(kms::audit::segment_number_in_name("audit.log.00004x"), std::nullopt);
}

}  // namespace
