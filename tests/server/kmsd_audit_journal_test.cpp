// Issue 8, "One durable write per batch", against a real kmsd over TLS on both backends: an
// admission and its audit record are made durable together by the registry's COMMIT (the
// audit journal), the audit file is not fdatasync'ed on the request path (/metrics:
// kms_audit_syncs_total does not move, one journal per group commit). kmsd is then killed
// (SIGKILL) and its audit file loses everything it had not synced (as after a power loss,
// which a kill -9 alone can't show: the page cache keeps the writes): kms-audit verify
// --anchor-db accepts the lag, bridged by the journal, and the next start appends the
// missing records; afterwards the file alone holds the anchored record again.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "support/postgres_cluster.h"
#include "support/test_database.h"
#include "tokens/key_database.h"

namespace kmstest {
namespace {

namespace fs = std::filesystem;
using kms::client::UeClient;

constexpr const char* kNode = "journal-node";

std::size_t count_admissions(const std::string& path) {
  std::ifstream in(path);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    n += line.find("\"event\":\"admission\"") != std::string::npos;
  }
  return n;
}

class KmsdAuditJournalTest : public ::testing::TestWithParam<testsupport::DatabaseBackend> {
 protected:
  void SetUp() override {
    environment = KmsdEnvironment::create();
    database = environment->dir() + "/kms.db";
    ConfigOverrides overrides;
    if (GetParam() == testsupport::DatabaseBackend::postgresql) {
      if (!testsupport::PostgresCluster::binaries()) {
        GTEST_SKIP() << testsupport::PostgresCluster::missing_message();
      }
      database = testsupport::PostgresCluster::shared().create_database() + "&pool_size=4";
      // The subscribers kms-provision put in the SQLite file, moved to the server.
      tokens::KeyDatabase from(environment->dir() + "/kms.db");
      tokens::KeyDatabase to(database);
      for (const tokens::IdentityRecord& record : from.list()) to.insert(record);
      overrides.database_url = database;
    }
    overrides.server["node_name"] = std::string("\"") + kNode + "\"";
    // The background sync of the file never comes within this test: what is durable is
    // what the COMMITs made durable.
    overrides.audit["sync_interval_ms"] = "60000";
    config = environment->write_config("journal.toml", overrides);
    audit_path = environment->audit_path("journal.toml");
  }

  void admit(const KmsdProcess& kmsd) {
    const auto request =
        key_request(*environment, kAlice, UeClient::make_nonce(), kBob, UeClient::make_nonce());
    const auto response =
        ue_connection(kmsd, environment->pki())
            ->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
    ASSERT_EQ(response.status, 200u) << response.body << kmsd.log();
  }

  testsupport::CommandResult verify() const {
    return testsupport::run_command(
        {KMS_AUDIT_BIN, "verify", audit_path, "--anchor-db", database, "--node", kNode});
  }

  std::unique_ptr<KmsdEnvironment> environment;
  std::string database;
  std::string config;
  std::string audit_path;
};

TEST_P(KmsdAuditJournalTest, OneDurableWritePerBatchAndAKilledNodesLostFileTailIsRepaired) {
  constexpr int kAdmissions = 5;
  auto kmsd = std::make_unique<KmsdProcess>(*environment, config);
  const TestPki& pki = environment->pki();
  const auto syncs_at_start = fetch_metric(*kmsd, pki, "kms_audit_syncs_total");
  ASSERT_TRUE(syncs_at_start.has_value());
  const auto synced_size = fs::file_size(audit_path);
  for (int i = 0; i < kAdmissions; ++i) admit(*kmsd);

  // Every batch's one durable write was its COMMIT.
  EXPECT_EQ(fetch_metric(*kmsd, pki, "kms_audit_syncs_total"), syncs_at_start)
      << "an fdatasync of the audit file on the request path";
  const auto batches = fetch_metric(*kmsd, pki, "kms_group_commit_batches_total");
  ASSERT_TRUE(batches.has_value());
  EXPECT_GE(*batches, 1);
  EXPECT_EQ(fetch_metric(*kmsd, pki, "kms_audit_journals_total"), batches);
  EXPECT_EQ(count_admissions(audit_path), static_cast<std::size_t>(kAdmissions));

  kmsd->signal(SIGKILL);
  ASSERT_TRUE(wait_until([&] { return !kmsd->running(); }));
  kmsd.reset();
  fs::resize_file(audit_path, synced_size);  // what a power loss takes: the unsynced writes
  ASSERT_EQ(count_admissions(audit_path), 0u);

  auto verified = verify();
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("the log lags it by"), std::string::npos) << verified.out;
  EXPECT_NE(verified.out.find("kmsd appends them at its next start"), std::string::npos)
      << verified.out;

  kmsd = std::make_unique<KmsdProcess>(*environment, config);
  EXPECT_NE(kmsd->log().find("audit log completed from the registry's journal"), std::string::npos)
      << kmsd->log();
  EXPECT_EQ(count_admissions(audit_path), static_cast<std::size_t>(kAdmissions));
  admit(*kmsd);
  EXPECT_EQ(kmsd->terminate(), 0) << kmsd->log();
  verified = verify();
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("present and unchanged"), std::string::npos) << verified.out;
  EXPECT_EQ(count_admissions(audit_path), static_cast<std::size_t>(kAdmissions + 1));
}

INSTANTIATE_TEST_SUITE_P(Backends, KmsdAuditJournalTest, KMS_DATABASE_BACKENDS);

}  // namespace
}  // namespace kmstest
