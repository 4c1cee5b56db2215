// The hash-chained audit log: chain verification, tamper detection at the right record,
// resume after restart, torn tails, fail-closed writes, concurrency, and the kms-audit CLI.
#include "kms/audit/audit_log.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <boost/json.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "file_size_limit.h"
#include "kms/audit/audit_record.h"
#include "kms/audit/audit_verify.h"

namespace fs = std::filesystem;
using kms::AuditEvent;
using kms::AuditUnavailable;
using kms::audit::AuditLog;
using kms::audit::verify_file;

using kmstest::FileSizeLimit;

namespace {

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kms-audit-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = (dir_ / "audit.log").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static AuditEvent release(int i) {
    return {"key_release",
            "ok",
            {{"bridge", "sip:bridge1@ims.example.net"},
             {"conference", "00112233445566778899aabbccddeeff"},
             {"member", "sip:user" + std::to_string(i) + "@ims.example.net"}}};
  }
  void write_records(int count) {
    AuditLog log(path_);
    for (int i = 0; i < count; ++i) log.record(release(i));
  }
  std::vector<std::string> lines() const {
    std::ifstream in(path_);
    std::vector<std::string> result;
    for (std::string line; std::getline(in, line);) result.push_back(line);
    return result;
  }
  void write_lines(const std::vector<std::string>& content, bool final_newline = true) {
    std::ofstream out(path_, std::ios::trunc | std::ios::binary);
    for (std::size_t i = 0; i < content.size(); ++i) {
      out << content[i];
      if (i + 1 < content.size() || final_newline) out << '\n';
    }
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(AuditLogTest, ChainOfRecordsVerifies) {
  write_records(20);
  const auto result = verify_file(path_);
  EXPECT_TRUE(result.ok) << result.problem;
  EXPECT_EQ(result.records, 20u);
  EXPECT_EQ(result.last_seq, 20u);
  EXPECT_EQ(lines().size(), 20u);
  EXPECT_NE(lines()[0].find(std::string(kms::audit::kGenesisHash)), std::string::npos);
}

TEST_F(AuditLogTest, RecordIsOneLineEvenWithHostileFieldValues) {
  {
    AuditLog log(path_);
    log.record({"refusal",
                "malformed_request",
                {{"detail", "quote\" newline\n brace} ,\"hash\":\"" + std::string(64, 'a')}}});
    log.record(release(1));
  }
  EXPECT_EQ(lines().size(), 2u);
  EXPECT_TRUE(verify_file(path_).ok);
}

TEST_F(AuditLogTest, ResumesTheChainAfterReopen) {
  write_records(5);
  std::string head;
  {
    AuditLog log(path_);
    EXPECT_EQ(log.last_seq(), 5u);
    head = log.head_hash();
    log.record(release(6));
    EXPECT_EQ(log.last_seq(), 6u);
  }
  const auto all = lines();
  ASSERT_EQ(all.size(), 6u);
  EXPECT_NE(all[5].find("\"seq\":6,"), std::string::npos);
  EXPECT_NE(all[5].find(head), std::string::npos);
  EXPECT_TRUE(verify_file(path_).ok);
}

TEST_F(AuditLogTest, FlippedByteIsReportedAtItsRecord) {
  write_records(10);
  for (std::size_t offset : {std::size_t{12}, std::size_t{40}, std::size_t{120}}) {
    auto content = lines();
    std::string& line = content[6];  // record 7
    ASSERT_LT(offset, line.size());
    line[offset] = static_cast<char>(line[offset] ^ 0x01);
    write_lines(content);
    const auto result = verify_file(path_);
    EXPECT_FALSE(result.ok);
    EXPECT_EQ(result.broken_line, 7u) << "offset " << offset << ": " << result.problem;
    EXPECT_EQ(result.records, 6u);
  }
}

TEST_F(AuditLogTest, AlteredHashFieldIsReportedAtItsRecord) {
  write_records(10);
  auto content = lines();
  std::string& line = content[2];
  line[line.size() - 5] = line[line.size() - 5] == '0' ? '1' : '0';
  write_lines(content);
  const auto result = verify_file(path_);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.broken_line, 3u);
}

TEST_F(AuditLogTest, DeletedRecordIsReportedWhereTheGapIs) {
  write_records(10);
  auto content = lines();
  content.erase(content.begin() + 3);  // record 4
  write_lines(content);
  const auto result = verify_file(path_);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.broken_line, 4u);
  EXPECT_NE(result.problem.find("seq 5, expected 4"), std::string::npos) << result.problem;
}

TEST_F(AuditLogTest, RecomputedRecordStillBreaksTheChainAfterIt) {
  // An attacker who rewrites record 3 and recomputes its own hash breaks record 4's link.
  write_records(6);
  auto content = lines();
  std::string forged = kms::audit::format_record(3, "2026-01-01T00:00:00.000Z",
                                                 kms::audit::line_hash(content[1]).claimed,
                                                 {"key_release", "ok", {{"member", "x"}}});
  content[2] = forged;
  write_lines(content);
  const auto result = verify_file(path_);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.broken_line, 4u);
}

TEST_F(AuditLogTest, TruncatedLastLineIsDetectedAndCutOnResume) {
  write_records(4);
  auto content = lines();
  content[3].resize(content[3].size() / 2);
  write_lines(content, /*final_newline=*/false);
  auto result = verify_file(path_);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.broken_line, 4u);

  {
    AuditLog log(path_);  // the torn record never returned from record(): cut it, note it
    EXPECT_EQ(log.last_seq(), 4u);
    log.record(release(9));
  }
  const auto all = lines();
  ASSERT_EQ(all.size(), 5u);
  EXPECT_NE(all[3].find("audit_recovered"), std::string::npos);
  result = verify_file(path_);
  EXPECT_TRUE(result.ok) << result.problem;
}

TEST_F(AuditLogTest, DamagedLastRecordRefusesToResume) {
  write_records(3);
  auto content = lines();
  content[2][20] = static_cast<char>(content[2][20] ^ 0x01);
  write_lines(content);
  EXPECT_THROW(AuditLog log(path_), AuditUnavailable);
}

TEST_F(AuditLogTest, UnwritableDeviceFailsClosed) {
  AuditLog log("/dev/full");  // every write fails with ENOSPC
  EXPECT_THROW(log.record(release(1)), AuditUnavailable);
  EXPECT_EQ(log.stats().failures, 1u);
  EXPECT_EQ(log.stats().records, 0u);
}

// "Stays failed" (audit_log.h): after one failed write the log refuses every later record,
// append and sync until its retry interval has passed, although the file would take them,
// because its tail is uncertain. A restarted process (a new AuditLog on the file) resumes
// from what is on disk.
TEST_F(AuditLogTest, AfterOneFailedWriteTheLogStaysFailedForItsRetryInterval) {
  kms::audit::AuditLogOptions options;
  options.retry_interval = std::chrono::hours(1);
  auto log = std::make_unique<AuditLog>(path_, options);
  log->record(release(1));
  const auto size = fs::file_size(path_);
  {
    FileSizeLimit limit(size);  // the file can't grow: the next write fails
    EXPECT_THROW(log->record(release(2)), AuditUnavailable);
  }
  {  // the file takes writes again (from another descriptor, without disturbing the log)
    std::ofstream probe(path_, std::ios::app);
    probe << "probe";
    probe.flush();
    EXPECT_TRUE(probe.good());
  }
  ASSERT_EQ(fs::file_size(path_), size + 5);
  fs::resize_file(path_, size);

  EXPECT_THROW(log->record(release(3)), AuditUnavailable);
  EXPECT_THROW(log->append(release(4)), AuditUnavailable);
  EXPECT_THROW(log->sync(), AuditUnavailable);
  EXPECT_FALSE(log->probe());
  EXPECT_EQ(fs::file_size(path_), size);  // nothing written after the failure
  EXPECT_EQ(log->stats().records, 1u);
  EXPECT_EQ(log->stats().failures, 4u);  // the probe is not a failure
  EXPECT_TRUE(log->stats().down);
  EXPECT_EQ(log->stats().recoveries, 0u);
  ASSERT_TRUE(log->head());
  EXPECT_EQ(log->head()->seq, 1u);

  log.reset();  // a restarted process resumes from the file
  AuditLog restarted(path_);
  EXPECT_EQ(restarted.last_seq(), 1u);
  restarted.record(release(5));
  const auto result = verify_file(path_);
  EXPECT_TRUE(result.ok) << result.problem;
  EXPECT_EQ(result.records, 2u);
}

// The same for the group-commit path: a failed append() makes sync() and every later
// append() fail within the retry interval, although the file would take them.
TEST_F(AuditLogTest, AfterOneFailedAppendSyncAndLaterAppendsFail) {
  kms::audit::AuditLogOptions options;
  options.retry_interval = std::chrono::hours(1);
  AuditLog log(path_, options);
  log.append(release(1));
  log.sync();
  const auto size = fs::file_size(path_);
  {
    FileSizeLimit limit(size);
    EXPECT_THROW(log.append(release(2)), AuditUnavailable);
  }
  EXPECT_THROW(log.sync(), AuditUnavailable);
  EXPECT_THROW(log.append(release(3)), AuditUnavailable);
  EXPECT_THROW(log.record(release(4)), AuditUnavailable);
  EXPECT_EQ(fs::file_size(path_), size);
  EXPECT_EQ(log.stats().records, 1u);
  EXPECT_EQ(log.head()->seq, 1u);
}

std::map<std::string, std::string> fields_of(const std::string& line) {
  std::map<std::string, std::string> fields;
  const auto value = boost::json::parse(line);
  for (const auto& [key, field] : value.at("fields").as_object()) {
    fields[std::string(key)] = std::string(field.as_string());
  }
  return fields;
}

// Self-recovery (audit_log.h): the failing record is refused and never written later; the
// next call after the retry interval cuts the torn piece the failed write left, resumes the
// chain from the last complete record and records the failure before anything else, so
// the chain says that (and when, and how many calls were refused) instead of hiding it.
TEST_F(AuditLogTest, AFailedWriteIsCutAndTheChainResumesWithARecordOfTheFailure) {
  kms::audit::AuditLogOptions options;
  options.retry_interval = std::chrono::milliseconds(0);  // the next call retries
  AuditLog log(path_, options);
  std::vector<std::pair<bool, std::string>> changes;
  log.on_health_change(
      [&](bool up, const std::string& detail) { changes.emplace_back(up, detail); });
  log.record(release(1));
  const auto size = fs::file_size(path_);
  {
    FileSizeLimit limit(size + 100);  // a short write of 100 bytes, then EFBIG
    EXPECT_THROW(log.record(release(2)), AuditUnavailable);
    EXPECT_EQ(fs::file_size(path_), size + 100);  // the torn piece of record 2
    EXPECT_FALSE(verify_file(path_).ok);
    // Still no room, not even for the record of the failure: stays failed.
    EXPECT_THROW(log.record(release(3)), AuditUnavailable);
    EXPECT_FALSE(log.probe());
    EXPECT_TRUE(log.stats().down);
  }
  log.record(release(4));  // room again: resumes, then records
  EXPECT_FALSE(log.stats().down);
  EXPECT_EQ(log.stats().recoveries, 1u);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_FALSE(changes[0].first);
  EXPECT_NE(changes[0].second.find("File too large"), std::string::npos) << changes[0].second;
  EXPECT_TRUE(changes[1].first);

  const auto result = verify_file(path_);
  EXPECT_TRUE(result.ok) << result.problem;
  EXPECT_EQ(result.records, 3u);
  const auto all = lines();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_NE(all[0].find("user1@"), std::string::npos);
  EXPECT_NE(all[1].find("\"event\":\"audit_recovered\""), std::string::npos) << all[1];
  const auto recovered = fields_of(all[1]);
  EXPECT_NE(recovered.at("error").find("File too large"), std::string::npos);
  EXPECT_EQ(recovered.at("last_durable_seq"), "1");
  EXPECT_EQ(recovered.at("torn_bytes_removed"), "100");
  EXPECT_EQ(recovered.at("refused"), "2");  // record 2 (the failing write) and record 3
  EXPECT_FALSE(recovered.at("failed_at").empty());
  EXPECT_NE(all[2].find("user4@"), std::string::npos);
  // The refused records are nowhere: their callers were told.
  for (const auto& line : all) {
    EXPECT_EQ(line.find("user2@"), std::string::npos);
    EXPECT_EQ(line.find("user3@"), std::string::npos);
  }
  ASSERT_TRUE(log.head());
  EXPECT_EQ(log.head()->seq, 3u);
  EXPECT_EQ(log.head()->hash, result.head_hash);
  // kms-audit agrees.
  const int code = std::system((std::string(KMS_AUDIT_BIN) + " verify -q " + path_).c_str());
  EXPECT_EQ(code, 0);
}

// A log whose durable records are gone from the file (lost, cut) does not resume: the chain
// would go on as if nothing were missing.
TEST_F(AuditLogTest, ALogThatLostDurableRecordsDoesNotResume) {
  kms::audit::AuditLogOptions options;
  options.retry_interval = std::chrono::milliseconds(0);
  AuditLog log(path_, options);
  for (int i = 1; i <= 3; ++i) log.record(release(i));
  const auto size = fs::file_size(path_);
  {
    FileSizeLimit limit(size);
    EXPECT_THROW(log.record(release(4)), AuditUnavailable);
  }
  auto content = lines();
  content.resize(2);  // durable record 3 removed behind the log's back
  write_lines(content);
  try {
    log.record(release(5));
    ADD_FAILURE() << "resumed without durable record 3";
  } catch (const AuditUnavailable& error) {
    EXPECT_NE(std::string(error.what()).find("durable records are missing"), std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(log.probe());
  EXPECT_EQ(lines().size(), 2u);
}

// Resuming needs free space on the log's filesystem (hysteresis at the edge of a full disk).
TEST_F(AuditLogTest, ResumingNeedsFreeSpaceOnTheFilesystem) {
  kms::audit::AuditLogOptions options;
  options.retry_interval = std::chrono::milliseconds(0);
  options.resume_free_bytes = std::uint64_t{1} << 62;  // more than any filesystem has
  AuditLog log(path_, options);
  log.record(release(1));
  {
    FileSizeLimit limit(fs::file_size(path_));
    EXPECT_THROW(log.record(release(2)), AuditUnavailable);
  }
  try {
    log.record(release(3));
    ADD_FAILURE() << "resumed without the free space it needs";
  } catch (const AuditUnavailable& error) {
    EXPECT_NE(std::string(error.what()).find("needed to resume"), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(lines().size(), 1u);
}

TEST_F(AuditLogTest, SecondWriterOnTheSameFileIsRefused) {
  AuditLog first(path_);
  EXPECT_THROW(AuditLog second(path_), AuditUnavailable);
  first.record(release(1));
  EXPECT_TRUE(verify_file(path_).ok);
}

TEST_F(AuditLogTest, AppendThenSyncSharesOneSync) {
  {
    AuditLog log(path_);
    log.append(release(1));
    log.append(release(2));
    log.append(release(3));
    log.sync();
    log.sync();  // nothing new: no second fdatasync
    EXPECT_EQ(log.stats().syncs, 1u);
    EXPECT_EQ(log.stats().records, 3u);
  }
  EXPECT_EQ(verify_file(path_).records, 3u);
  AuditLog full("/dev/full");
  EXPECT_THROW(full.append(release(1)), AuditUnavailable);
  EXPECT_THROW(full.sync(), AuditUnavailable);
}

TEST_F(AuditLogTest, HeadIsTheLastDurableRecordNotTheLastAppended) {
  AuditLog log(path_);
  EXPECT_FALSE(log.head());  // nothing durable: nothing to anchor
  log.record(release(1));
  ASSERT_TRUE(log.head());
  const kms::AuditHead first = *log.head();
  EXPECT_EQ(first.seq, 1u);
  EXPECT_EQ(first.hash, log.head_hash());
  log.append(release(2));  // written, not yet synced: a crash could still lose it
  EXPECT_EQ(log.head()->seq, 1u);
  EXPECT_EQ(log.head()->hash, first.hash);
  log.sync();
  EXPECT_EQ(log.head()->seq, 2u);
  EXPECT_EQ(log.head()->hash, log.head_hash());
}

TEST_F(AuditLogTest, HeadResumesFromTheFile) {
  write_records(4);
  AuditLog log(path_);
  ASSERT_TRUE(log.head());
  EXPECT_EQ(log.head()->seq, 4u);
  EXPECT_EQ(log.head()->hash, verify_file(path_).head_hash);
}

TEST_F(AuditLogTest, AnchorCatchesDeletedLastRecordsTheChainAloneAccepts) {
  write_records(5);
  const auto full = verify_file(path_);
  const kms::AuditHead anchor{5, full.head_hash};
  EXPECT_TRUE(verify_file(path_, anchor).ok);
  auto content = lines();
  content.resize(3);
  write_lines(content);
  EXPECT_TRUE(verify_file(path_).ok);  // a cut at a record boundary is a valid chain
  const auto cut = verify_file(path_, anchor);
  EXPECT_FALSE(cut.ok);
  EXPECT_TRUE(cut.anchor_missing);
  EXPECT_EQ(cut.problem, "audit log truncated or altered: anchored seq 5 (hash " + anchor.hash +
                             ") not found (the log ends at seq 3)");
  // An anchor older than the file's end still holds (records after it are not anchored).
  const std::string second_hash = kms::audit::line_hash(lines()[1]).claimed;
  EXPECT_TRUE(verify_file(path_, kms::AuditHead{2, second_hash}).ok);
  EXPECT_FALSE(verify_file(path_, kms::AuditHead{2, full.head_hash}).ok);
}

TEST_F(AuditLogTest, AnchorCatchesARewrittenRecordWithARecomputedHash) {
  write_records(3);
  const kms::AuditHead anchor{3, verify_file(path_).head_hash};
  auto content = lines();
  std::string body = content[2].substr(0, content[2].find(kms::audit::kHashMarker));
  body.replace(body.find("user2"), 5, "userX");
  content[2] = body + std::string(kms::audit::kHashMarker) + kms::audit::sha256_hex(body) + "\"}";
  write_lines(content);
  EXPECT_TRUE(verify_file(path_).ok);
  const auto altered = verify_file(path_, anchor);
  EXPECT_FALSE(altered.ok);
  EXPECT_TRUE(altered.anchor_missing);
  EXPECT_NE(altered.problem.find("anchored seq 3"), std::string::npos) << altered.problem;
  EXPECT_NE(altered.problem.find("record 3 has hash"), std::string::npos) << altered.problem;
}

// A new audit log is the KMS user's alone, whatever the umask (0: everything allowed; 0277:
// even the owner's write bit taken away).
TEST_F(AuditLogTest, NewLogIsCreatedOwnerOnlyWhateverTheUmask) {
  for (const mode_t mask : {mode_t{0}, mode_t{022}, mode_t{0277}}) {
    SCOPED_TRACE(mask);
    fs::remove(path_);
    const mode_t previous = ::umask(mask);
    {
      AuditLog log(path_);
      log.record(release(1));
    }
    ::umask(previous);
    struct stat info {};
    ASSERT_EQ(::stat(path_.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 07777, 0600u);
    AuditLog again(path_);  // and it can be appended to after a restart
    EXPECT_NO_THROW(again.record(release(2)));
  }
  EXPECT_TRUE(verify_file(path_).ok);
}

TEST_F(AuditLogTest, UnopenablePathThrows) {
  EXPECT_THROW(AuditLog log((dir_ / "missing" / "audit.log").string()), AuditUnavailable);
}

TEST_F(AuditLogTest, ConcurrentWritersKeepOneChain) {
  {
    AuditLog log(path_);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < 25; ++i) log.record(release(t * 100 + i));
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(log.stats().records, 200u);
    EXPECT_GE(log.stats().syncs, 1u);
    // Every record() returned durable: the synced head is the last record written.
    const auto head = log.head();
    ASSERT_TRUE(head.has_value());
    EXPECT_EQ(head->seq, 200u);
    EXPECT_EQ(head->hash, verify_file(path_).head_hash);
  }
  const auto result = verify_file(path_);
  EXPECT_TRUE(result.ok) << result.problem;
  EXPECT_EQ(result.records, 200u);
}

TEST_F(AuditLogTest, ValuesThatAreNotUtf8StillMakeAValidRecord) {
  // A client-chosen value (a certificate's SAN URI, an identity cut at its limit) may hold
  // bytes that are not UTF-8; the record must stay JSON, or the chain would read as broken.
  {
    AuditLog log(path_);
    log.record({"refusal",
                "bridge_not_provisioned",
                {{"bridge", "sip:evil\xff\xc3\x28\"\n@x"}, {"cut", "ab\xc3"}}});
  }
  const auto result = verify_file(path_);
  EXPECT_TRUE(result.ok) << result.problem;
  EXPECT_EQ(result.records, 1u);
  const auto record = lines().at(0);
  EXPECT_NE(record.find("\"bridge\":\"sip:evil\xef\xbf\xbd\xef\xbf\xbd(\\\"\\n@x\""),
            std::string::npos)
      << record;
  EXPECT_NE(record.find("\"cut\":\"ab\xef\xbf\xbd\""), std::string::npos) << record;
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

TEST_F(AuditLogTest, CliVerifiesAndNamesTheBrokenLine) {
  write_records(8);
  auto [code, out] = run(std::string(KMS_AUDIT_BIN) + " verify " + path_);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("8 records"), std::string::npos) << out;

  auto content = lines();
  content[4][30] = static_cast<char>(content[4][30] ^ 0x20);
  write_lines(content);
  std::tie(code, out) = run(std::string(KMS_AUDIT_BIN) + " verify " + path_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("line 5"), std::string::npos) << out;

  std::tie(code, out) = run(std::string(KMS_AUDIT_BIN) + " verify " + path_ + ".missing");
  EXPECT_EQ(code, 2) << out;
}

// -q/--quiet (docs/SERVER.md): nothing printed on success; a broken or unreadable log is
// still reported, in one line, with its exit code.
TEST_F(AuditLogTest, CliQuietPrintsNothingOnSuccessOnly) {
  write_records(8);
  for (const char* quiet : {" -q", " --quiet"}) {
    auto [code, out] = run(std::string(KMS_AUDIT_BIN) + " verify" + quiet + " " + path_);
    EXPECT_EQ(code, 0) << out;
    EXPECT_EQ(out, "") << quiet;
  }
  auto content = lines();
  content[2][30] = static_cast<char>(content[2][30] ^ 0x20);
  write_lines(content);
  auto [code, out] = run(std::string(KMS_AUDIT_BIN) + " verify -q " + path_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_EQ(out.rfind("BROKEN: " + path_ + ": line 3: ", 0), 0u) << out;
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;

  std::tie(code, out) = run(std::string(KMS_AUDIT_BIN) + " verify -q " + path_ + ".missing");
  EXPECT_EQ(code, 2) << out;
  EXPECT_EQ(out, "kms-audit: cannot open " + path_ + ".missing\n");
}

}  // namespace
