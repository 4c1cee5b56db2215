// The bounded audit cost of unauthenticated refusals (kms/audit/refusal_summary.h) over a
// real AuditLog: per interval and per (source, code) one refusal record and one summary
// record with the count, no sync of their own, one sync per interval, summaries kept while
// the log is down.
#include "kms/audit/refusal_summary.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <boost/json.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include "kms/audit/audit_log.h"
#include "kms/audit/audit_verify.h"

namespace fs = std::filesystem;
using kms::AuditEvent;
using kms::audit::AuditLog;
using kms::audit::RefusalSummarizer;
using kms::audit::RefusalSummaryOptions;

namespace {

struct Record {
  std::string event, outcome;
  std::map<std::string, std::string> fields;
};

class RefusalSummaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kms-refusal-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = (dir_ / "audit.log").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static RefusalSummaryOptions manual() {
    RefusalSummaryOptions options;
    options.background = false;  // the test ends each interval with flush()
    return options;
  }
  static AuditEvent refusal(const std::string& code, int n) {
    return {"refusal",
            code,
            {{"operation", "key_request"},
             {"chair", "sip:nobody" + std::to_string(n) + "@ims.example.net"},
             {"request_id", "r-" + std::to_string(n)}}};
  }
  std::vector<Record> records() const {
    std::vector<Record> out;
    std::ifstream in(path_);
    for (std::string line; std::getline(in, line);) {
      const auto value = boost::json::parse(line).as_object();
      Record record{std::string(value.at("event").as_string()),
                    std::string(value.at("outcome").as_string()),
                    {}};
      for (const auto& [key, field] : value.at("fields").as_object()) {
        record.fields[std::string(key)] = std::string(field.as_string());
      }
      out.push_back(std::move(record));
    }
    return out;
  }
  std::size_t count(const std::string& event) const {
    std::size_t n = 0;
    for (const auto& record : records()) n += record.event == event;
    return n;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(RefusalSummaryTest, ManyRefusalsCostTwoRecordsPerSourceAndCodeAndOneSyncPerInterval) {
  AuditLog log(path_);
  RefusalSummarizer summarizer(log, manual());
  const std::vector<std::string> sources = {"127.0.0.2:4000", "::1:4001"};
  const std::vector<std::string> codes = {"unknown_subscriber", "envelope_authentication_failed"};
  for (int round = 1; round <= 2; ++round) {
    const auto syncs = log.stats().syncs;
    const auto before = log.stats().records;
    for (int i = 0; i < 250; ++i) {
      for (const auto& source : sources) {
        for (const auto& code : codes) summarizer.unauthenticated_refusal(refusal(code, i), source);
      }
    }
    // 1000 refusals: one record each for the 4 keys, no sync at all.
    EXPECT_EQ(log.stats().records, before + 4);
    EXPECT_EQ(log.stats().syncs, syncs);
    summarizer.flush();  // the interval ends: 4 summaries, one sync
    EXPECT_EQ(log.stats().records, before + 8);
    EXPECT_EQ(log.stats().syncs, syncs + 1);
  }
  const auto all = records();
  ASSERT_EQ(all.size(), 16u);
  std::map<std::pair<std::string, std::string>, std::uint64_t> counted;
  for (const auto& record : all) {
    if (record.event == "refusal") {
      counted[{"", record.outcome}] += 1;
      EXPECT_EQ(record.fields.at("request_id"), "r-0");  // the interval's first, in full
    } else {
      ASSERT_EQ(record.event, "refusal_summary");
      counted[{record.fields.at("source"), record.outcome}] +=
          std::stoull(record.fields.at("count"));
      EXPECT_EQ(record.fields.at("operation"), "key_request");
      EXPECT_EQ(record.fields.at("first_request_id"), "r-1");
      EXPECT_EQ(record.fields.at("last_request_id"), "r-249");
      EXPECT_FALSE(record.fields.at("first_time").empty());
      EXPECT_FALSE(record.fields.at("last_time").empty());
    }
  }
  // Per round and key: 1 in full + 249 counted; the source is the address without port.
  for (const auto& code : codes) {
    EXPECT_EQ((counted[{"", code}]), 4u);
    EXPECT_EQ((counted[{"127.0.0.2", code}]), 2u * 249);
    EXPECT_EQ((counted[{"::1", code}]), 2u * 249);
  }
  const auto stats = summarizer.stats();
  EXPECT_EQ(stats.refusals, 2000u);
  EXPECT_EQ(stats.recorded, 8u);
  EXPECT_EQ(stats.summarized, 2000u - 8);
  EXPECT_EQ(stats.summaries, 8u);
  const auto verified = kms::audit::verify_file(path_);
  EXPECT_TRUE(verified.ok) << verified.problem;
}

TEST_F(RefusalSummaryTest, BeyondMaxKeysSourcesAreCountedTogether) {
  AuditLog log(path_);
  RefusalSummaryOptions options = manual();
  options.max_keys = 4;
  RefusalSummarizer summarizer(log, options);
  for (int source = 0; source < 10; ++source) {
    for (int i = 0; i < 3; ++i) {
      summarizer.unauthenticated_refusal(refusal("unknown_subscriber", i),
                                         "10.0.0." + std::to_string(source) + ":1");
    }
  }
  summarizer.flush();
  std::uint64_t total = 0;
  std::uint64_t other = 0;
  for (const auto& record : records()) {
    if (record.event == "refusal") ++total;
    if (record.event != "refusal_summary") continue;
    total += std::stoull(record.fields.at("count"));
    if (record.fields.at("source") == "*") other = std::stoull(record.fields.at("count"));
  }
  EXPECT_EQ(total, 30u);            // every refusal is accounted for
  EXPECT_EQ(count("refusal"), 5u);  // 4 keys and the "*" key
  EXPECT_EQ(count("refusal_summary"), 5u);
  EXPECT_EQ(other, 6u * 3 - 1);
}

// Lowers this process's RLIMIT_FSIZE (SIGXFSZ ignored) so the log's file cannot grow.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    if (::getrlimit(RLIMIT_FSIZE, &saved_) != 0) throw std::runtime_error("getrlimit");
    previous_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) throw std::runtime_error("setrlimit");
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_);
  }

 private:
  rlimit saved_{};
  void (*previous_)(int) = SIG_DFL;
};

TEST_F(RefusalSummaryTest, WhileTheLogIsDownRefusalsAreCountedAndWrittenOnceItResumes) {
  kms::audit::AuditLogOptions log_options;
  log_options.retry_interval = std::chrono::milliseconds(0);
  AuditLog log(path_, log_options);
  RefusalSummarizer summarizer(log, manual());
  log.record({"admission", "ok", {}});
  {
    FileSizeLimit limit(fs::file_size(path_));
    EXPECT_THROW(log.record({"admission", "ok", {}}), kms::AuditUnavailable);
    for (int i = 0; i < 40; ++i) {
      EXPECT_NO_THROW(
          summarizer.unauthenticated_refusal(refusal("stale_timestamp", i), "1.2.3.4:5"));
    }
    summarizer.flush();  // the summary cannot be written: kept
    EXPECT_EQ(count("refusal_summary"), 0u);
    EXPECT_EQ(summarizer.stats().summaries, 0u);
  }
  summarizer.flush();  // the log resumes on the summary's append
  const auto all = records();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[1].event, "audit_recovered");
  EXPECT_EQ(all[2].event, "refusal_summary");
  EXPECT_EQ(all[2].fields.at("count"), "40");  // none lost, the first one included
  EXPECT_EQ(all[2].fields.at("first_request_id"), "r-0");
  EXPECT_EQ(all[2].fields.at("source"), "1.2.3.4");
  EXPECT_TRUE(kms::audit::verify_file(path_).ok);
}

TEST(PeerAddress, StripsThePort) {
  EXPECT_EQ(kms::audit::peer_address("127.0.0.1:5000"), "127.0.0.1");
  EXPECT_EQ(kms::audit::peer_address("::1:5000"), "::1");
  EXPECT_EQ(kms::audit::peer_address("unknown"), "unknown");
}

}  // namespace
