// One durable write per registry batch (issue 8), on both backends with the real audit log:
// a journaling AuditLog (sync_interval) hands a batch's records to the registry, which
// stores them in the batch's own COMMIT (audit_journal); the file is not fdatasync'ed on
// the request path. A crash that loses the file's unsynced tail (power loss: the page cache
// gone) is repaired at the next start from the journal, `kms-audit verify --anchor-db`
// reports the lag before that and catches a truncation beyond the journal or a rewritten
// journaled record.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "kms/audit/audit_log.h"
#include "kms/audit/audit_record.h"
#include "kms/audit/audit_verify.h"
#include "kms/core/protocol.h"
#include "kms/core/stored_conference_registry.h"
#include "kms/errors.h"
#include "storage/database_url.h"
#include "storage/postgres.h"
#include "support/test_database.h"

namespace {

namespace fs = std::filesystem;
using kms::Admission;
using kms::AdmissionOutcome;
using kms::Bytes;

constexpr std::int64_t kNow = 1'800'000'000;

Bytes digest(std::uint8_t tag, int n) {
  Bytes out(32, tag);
  out[0] = static_cast<std::uint8_t>(n);
  out[1] = static_cast<std::uint8_t>(n >> 8);
  return out;
}

// Conference n: its chair admits member n.
Admission request(int n) {
  Admission a;
  a.chair_id = "sip:alice@ims.example.net";
  a.chair_nonce = hsm::SecureBytes(digest(1, n));
  a.conference_id = kms::protocol::conference_id(a.chair_id, a.chair_nonce.view());
  a.chair_key_id = kms::protocol::key_id(a.conference_id, a.chair_id, a.chair_nonce.view());
  a.responder_id = "sip:member" + std::to_string(n) + "@ims.example.net";
  a.responder_nonce = hsm::SecureBytes(digest(2, n));
  a.responder_key_id =
      kms::protocol::key_id(a.conference_id, a.responder_id, a.responder_nonce.view());
  a.profile = 1;
  a.suite = 1;
  a.request_digest = digest(3, n);
  a.envelopes[0] = {digest(4, n), kNow + 300};
  a.envelopes[1] = {digest(5, n), kNow + 300};
  a.now = kNow;
  a.conference_expires_at = kNow + 3600;
  return a;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  for (const std::string& line : lines) out << line << '\n';
}

// A record's body changed and its hash recomputed after `prev`: a valid record.
std::string rewritten(const std::string& line, const std::string& prev) {
  std::string body = line.substr(0, line.find(kms::audit::kHashMarker));
  const auto member = body.find("sip:member");
  body.replace(member, 10, "sip:mallet");
  const auto prev_at = body.find("\"prev\":\"") + 8;
  body.replace(prev_at, 64, prev);
  return body + std::string(kms::audit::kHashMarker) + kms::audit::sha256_hex(body) + "\"}";
}

testsupport::CommandResult kms_audit(const std::vector<std::string>& arguments) {
  std::vector<std::string> argv = {KMS_AUDIT_BIN, "verify"};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return testsupport::run_command(argv);
}

class AuditJournalTest : public ::testing::TestWithParam<testsupport::DatabaseBackend> {
 protected:
  void SetUp() override {
    KMS_REQUIRE_DATABASE(database);
    open();
  }

  // kmsd's start: the log, the registry, then the journal restored into the log.
  std::size_t open() {
    kms::audit::AuditLogOptions options;
    options.sync_interval = std::chrono::hours(1);  // the background sync never runs here
    log = std::make_unique<kms::audit::AuditLog>(path, options);
    kms::RegistryOptions registry_options;
    registry_options.node = node;
    registry = kms::open_conference_registry(database.url(), registry_options);
    return registry->restore_audit_journal(*log);
  }
  void close() {
    registry.reset();
    log.reset();
  }

  void admit(int n) {
    const AdmissionOutcome outcome = registry->admit(
        request(n),
        [&](AdmissionOutcome) {
          log->append({"admission", "ok", {{"member", "sip:member" + std::to_string(n)}}});
        },
        log.get());
    EXPECT_EQ(outcome, AdmissionOutcome::admitted);
  }

  testsupport::TestDatabase database{GetParam()};
  std::string path = database.dir().path() + "/audit.log";
  std::string node = "node-a";
  std::unique_ptr<kms::audit::AuditLog> log;
  std::unique_ptr<kms::StoredConferenceRegistry> registry;
};

TEST_P(AuditJournalTest, EachBatchIsOneDurableWriteItsCommitAndTheFileIsSyncedLater) {
  const std::uint64_t syncs_at_start = log->stats().syncs;
  for (int n = 0; n < 5; ++n) admit(n);  // alone: five batches of one
  std::vector<std::thread> callers;      // together: batches of several
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) admit(100 + t * 5 + i);
    });
  }
  for (std::thread& caller : callers) caller.join();

  const kms::GroupCommitStats commits = registry->group_commit_stats();
  EXPECT_EQ(commits.writes, 25u);
  EXPECT_EQ(commits.audit_journals, commits.batches) << "one journal in every COMMIT";
  EXPECT_EQ(commits.audit_syncs, 0u) << "no audit sync before any COMMIT";
  EXPECT_EQ(log->stats().syncs, syncs_at_start) << "no fdatasync of the file on the request path";
  EXPECT_EQ(log->stats().journals, commits.batches);
  EXPECT_EQ(log->last_seq(), 25u);

  log->sync_now();  // what the background thread does every sync_interval
  EXPECT_EQ(log->stats().syncs, syncs_at_start + 1);
  EXPECT_EQ(log->head()->seq, 25u);
  admit(200);  // its COMMIT also deletes the rows the file has synced
  close();
  const auto verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("anchored seq 26"), std::string::npos) << verified.out;
}

TEST_P(AuditJournalTest, AFileThatLostItsUnsyncedTailIsCompletedFromTheJournalAtTheNextStart) {
  log->record({"kmsd_started", "ok", {}});  // durable at once (record() syncs)
  const auto synced_size = fs::file_size(path);
  for (int n = 0; n < 3; ++n) admit(n);
  close();
  // Power loss before the background sync: the file keeps only what was fdatasync'ed.
  fs::resize_file(path, synced_size);
  ASSERT_EQ(lines_of(path).size(), 1u);

  // Until the node starts again, verify checks the gap against the journal and says so.
  auto verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("anchored seq 4 (" + database.url() +
                              ") is in the registry's audit journal: the log lags it by 3 "
                              "records (seq 2..4)"),
            std::string::npos)
      << verified.out;
  // Without the journal (another node's name) the same file is a truncated log.
  verified = kms_audit({path, "--anchor-db", database.url(), "--node", "node-b"});
  if (GetParam() == testsupport::DatabaseBackend::postgresql) {  // no anchor for node-b
    EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
    EXPECT_NE(verified.out.find("holds no audit anchor"), std::string::npos) << verified.out;
  } else {  // SQLite holds one anchor (any node's name), node-b's journal is empty
    EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
    EXPECT_NE(verified.out.find("audit log truncated or altered: anchored seq 4"),
              std::string::npos)
        << verified.out;
  }

  EXPECT_EQ(open(), 3u) << "the three admissions' records appended from the journal";
  EXPECT_EQ(log->stats().restored, 3u);
  EXPECT_EQ(log->last_seq(), 4u);
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[3].find("sip:member2"), std::string::npos) << lines[3];
  admit(3);
  close();
  verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("anchored seq 5 (" + database.url() + ") present and unchanged"),
            std::string::npos)
      << verified.out;
  EXPECT_EQ(kms::audit::verify_file(path).records, 5u);
  // Restored once: the next start finds nothing to add.
  EXPECT_EQ(open(), 0u);
  EXPECT_EQ(log->last_seq(), 5u);
}

// A power loss can also leave a torn piece of an unsynced record at the file's end: it is
// cut, the journal's rows appended, and the cut noted after them (the note must not take a
// seq the journal holds).
TEST_P(AuditJournalTest, ATornTailIsCutTheJournalRestoredAndTheCutNotedAfterIt) {
  log->record({"kmsd_started", "ok", {}});
  const auto synced_size = fs::file_size(path);
  for (int n = 0; n < 2; ++n) admit(n);
  close();
  fs::resize_file(path, synced_size);
  {
    std::ofstream torn(path, std::ios::app | std::ios::binary);
    torn << "{\"seq\":2,\"time\":\"2026-";
  }

  EXPECT_EQ(open(), 2u);
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[1].find("sip:member0"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("sip:member1"), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find("\"event\":\"audit_recovered\""), std::string::npos) << lines[3];
  EXPECT_NE(lines[3].find("\"torn_bytes_removed\":\"22\""), std::string::npos) << lines[3];
  admit(2);
  close();
  const auto verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("anchored seq 5 (" + database.url() + ") present and unchanged"),
            std::string::npos)
      << verified.out;
}

// A batch whose transaction fails after its records were written (here: the database
// connection killed under it, PostgreSQL) admits nothing; its record stays in the file, as
// before the journal, and the next batch journals it with its own, so the chain and the
// journal stay contiguous and a lost tail is still restored.
TEST_P(AuditJournalTest, AFailedBatchLeavesItsRecordsInTheFileAndTheNextBatchJournalsThem) {
  if (GetParam() != testsupport::DatabaseBackend::postgresql) {
    GTEST_SKIP() << "an SQLite transaction cannot be made to fail on demand after its writes";
  }
  log->record({"kmsd_started", "ok", {}});
  const auto synced_size = fs::file_size(path);
  const storage::DatabaseUrl url = storage::DatabaseUrl::parse(database.url());
  EXPECT_THROW(
      registry->admit(
          request(0),
          [&](AdmissionOutcome) {
            log->append({"admission", "ok", {{"member", "sip:member0"}}});
            storage::pg::Connection other(url.conninfo, "", url.display());
            other.query(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid()");
          },
          log.get()),
      kms::ProtocolError);
  EXPECT_EQ(registry->group_commit_stats().audit_journals, 0u);
  EXPECT_EQ(lines_of(path).size(), 2u) << "the failed batch's record is in the file";
  admit(1);  // the pool replaces the dead connection
  close();

  fs::resize_file(path, synced_size);
  EXPECT_EQ(open(), 2u) << "the failed batch's record and the next one's, from the journal";
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[1].find("sip:member0"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("sip:member1"), std::string::npos) << lines[2];
  close();
  const auto verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("anchored seq 3 (" + database.url() + ") present and unchanged"),
            std::string::npos)
      << verified.out;
}

TEST_P(AuditJournalTest, VerifyCatchesATruncationBeyondTheJournalAndARewrittenJournaledRecord) {
  log->record({"kmsd_started", "ok", {}});
  for (int n = 0; n < 3; ++n) admit(n);
  close();
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 4u);

  // Cut before the first journaled record's predecessor: the journal can't bridge the gap.
  write_lines(path, {});
  auto verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("audit log truncated or altered: anchored seq 4"), std::string::npos)
      << verified.out;
  // A start refuses to build on such a file: the journal does not continue it.
  EXPECT_THROW(open(), kms::AuditUnavailable);
  close();

  // Record 3 rewritten and the chain after it recomputed: a valid chain, but not the
  // records the registry journaled.
  const std::string third = rewritten(lines[2], kms::audit::line_hash(lines[1]).claimed);
  const std::string fourth = rewritten(lines[3], kms::audit::line_hash(third).claimed);
  write_lines(path, {lines[0], lines[1], third, fourth});
  EXPECT_TRUE(kms::audit::verify_file(path).ok);
  verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("line 3: record 3 is not the one the registry journaled"),
            std::string::npos)
      << verified.out;

  // The last two records lost: the journal bridges that lag.
  write_lines(path, {lines[0], lines[1]});
  verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  write_lines(path, lines);
  verified = kms_audit({path, "--anchor-db", database.url(), "--node", node});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("present and unchanged"), std::string::npos) << verified.out;
}

INSTANTIATE_TEST_SUITE_P(Backends, AuditJournalTest, KMS_DATABASE_BACKENDS);

}  // namespace
