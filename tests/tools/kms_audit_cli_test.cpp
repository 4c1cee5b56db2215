// kms-audit verify --anchor-db against the registry database of a real kmsd (docs/SERVER.md
// "Audit log"): exit 0 when the log holds the anchored record, 1 with one BROKEN line when
// it does not (cut below the anchor, or another chain), 2 with one line on stderr when the
// database can't be read or has no audit_anchor table; a registry with no anchor yet only
// checks the chain. -q prints nothing on success only.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>

#include "kms/audit/audit_log.h"
#include "kms/audit/audit_record.h"
#include "kms/core/sqlite_conference_registry.h"
#include "tools_fixture.h"

namespace {

namespace fs = std::filesystem;
using kmstest::kAlice;
using kmstest::kBob;
using toolstest::environment;
using toolstest::kmsd;
using toolstest::run;

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  for (const auto& line : lines) out << line << '\n';
}

// The anchor row kmsd committed, read here with SQLite directly.
kms::AuditHead anchor_in(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    throw std::runtime_error("cannot open " + db_path);
  }
  sqlite3_stmt* statement = nullptr;
  kms::AuditHead head;
  if (sqlite3_prepare_v2(db, "SELECT seq, hash FROM audit_anchor WHERE id = 1", -1, &statement,
                         nullptr) == SQLITE_OK &&
      sqlite3_step(statement) == SQLITE_ROW) {
    head.seq = static_cast<std::uint64_t>(sqlite3_column_int64(statement, 0));
    head.hash = reinterpret_cast<const char*>(sqlite3_column_text(statement, 1));
  }
  sqlite3_finalize(statement);
  sqlite3_close(db);
  if (head.seq == 0) throw std::runtime_error("no audit anchor in " + db_path);
  return head;
}

class KmsAuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kmsd();
    dir_ = toolstest::test_dir();
    // An admission: kmsd appends its record, syncs, and anchors it in the same COMMIT.
    const auto bob = toolstest::invite(dir_, kAlice, kBob);
    ASSERT_EQ(bob.request.exit_code, 0) << bob.invite.err << bob.request.err;
    log_ = environment().audit_path();
    db_ = environment().dir() + "/kms.db";
    anchor_ = anchor_in(db_);
    ASSERT_GE(read_lines(log_).size(), anchor_.seq);
  }

  testsupport::CommandResult verify(const std::string& log, const std::string& db,
                                    bool quiet = false) const {
    std::vector<std::string> argv = {KMS_AUDIT_BIN, "verify", log, "--anchor-db", db};
    if (quiet) argv.push_back("-q");
    return run(argv);
  }

  std::string anchored() const {
    return "anchored seq " + std::to_string(anchor_.seq) + " (hash " + anchor_.hash + ")";
  }

  std::string dir_, log_, db_;
  kms::AuditHead anchor_;
};

TEST_F(KmsAuditTest, TheRunningKmsdsLogHoldsItsAnchor) {
  auto r = verify(log_, db_);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("ok: " + log_ + ": "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ok: anchored seq " + std::to_string(anchor_.seq) + " (" + db_ +
                       ") present and unchanged\n"),
            std::string::npos)
      << r.out;
  r = verify(log_, db_, true);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
}

TEST_F(KmsAuditTest, ExitOneForALogCutBelowTheAnchor) {
  auto lines = read_lines(log_);
  lines.resize(anchor_.seq - 1);  // the anchored record and everything after it deleted
  const std::string cut = dir_ + "/cut.log";
  write_lines(cut, lines);
  auto r = run({KMS_AUDIT_BIN, "verify", cut});
  EXPECT_EQ(r.exit_code, 0) << "a cut at a record boundary is a valid chain: " << r.out;
  const std::string expected =
      "BROKEN: " + cut + ": audit log truncated or altered: " + anchored() +
      " not found (the log ends at seq " + std::to_string(anchor_.seq - 1) + ")\n";
  for (bool quiet : {false, true}) {
    r = verify(cut, db_, quiet);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(r.out, expected);
    EXPECT_EQ(r.err, "");
  }
}

TEST_F(KmsAuditTest, ExitOneForTheLogOfAnotherChain) {
  // Another log with as many records: an intact chain, but not the one anchored.
  const std::string other = dir_ + "/other.log";
  {
    kms::audit::AuditLog log(other);
    for (std::uint64_t i = 0; i < anchor_.seq; ++i) {
      log.record({"admission", "ok", {{"member", kBob}}});
    }
  }
  const auto lines = read_lines(other);
  ASSERT_EQ(lines.size(), anchor_.seq);
  const std::string other_hash = kms::audit::line_hash(lines.back()).claimed;
  ASSERT_NE(other_hash, anchor_.hash);
  const auto r = verify(other, db_, true);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(r.out, "BROKEN: " + other + ": audit log truncated or altered: " + anchored() +
                       " not found (record " + std::to_string(anchor_.seq) + " has hash " +
                       other_hash + ")\n");
}

TEST_F(KmsAuditTest, ExitTwoForAMissingDatabase) {
  const std::string missing = dir_ + "/missing.db";
  for (bool quiet : {false, true}) {
    const auto r = verify(log_, missing, quiet);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_TRUE(toolstest::one_line(r.err)) << r.err;
    EXPECT_EQ(r.err.rfind("kms-audit: cannot open " + missing + ": ", 0), 0u) << r.err;
  }
  EXPECT_FALSE(fs::exists(missing));  // opened read-only: not created
}

TEST_F(KmsAuditTest, ExitTwoForADatabaseWithoutAnAnchorTable) {
  // The key database as kms-provision leaves it before kmsd ever ran.
  const std::string keys_only = dir_ + "/keys.db";
  const auto provisioned = environment().provision({"--database", keys_only, "subscriber", "list"});
  ASSERT_EQ(provisioned.exit_code, 0) << provisioned.err;
  ASSERT_TRUE(fs::exists(keys_only));
  const auto r = verify(log_, keys_only, true);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(toolstest::one_line(r.err)) << r.err;
  EXPECT_EQ(
      r.err.rfind(
          "kms-audit: " + keys_only + " is not a kmsd registry database with an audit anchor: ", 0),
      0u)
      << r.err;
}

TEST_F(KmsAuditTest, ARegistryWithoutAnAnchorYetOnlyChecksTheChain) {
  const std::string fresh = dir_ + "/fresh.db";
  { kms::SqliteConferenceRegistry registry(fresh); }  // kmsd's schema, nothing committed
  auto r = verify(log_, fresh);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("note: " + fresh + " holds no audit anchor yet (nothing committed)\n"),
            std::string::npos)
      << r.out;
  r = verify(log_, fresh, true);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  // The chain is still checked.
  auto lines = read_lines(log_);
  lines[0][20] = static_cast<char>(lines[0][20] ^ 0x01);
  const std::string broken = dir_ + "/broken.log";
  write_lines(broken, lines);
  r = verify(broken, fresh, true);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(r.out.rfind("BROKEN: " + broken + ": line 1: ", 0), 0u) << r.out;
}

}  // namespace
