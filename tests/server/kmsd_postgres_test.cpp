// kmsd on PostgreSQL, end to end: its key database and registry on a real server started by
// the test. A revocation written through another connection (another node, kms-provision)
// takes effect on the next request; while the server is stopped kmsd answers 503
// overloaded (not 500, no crash); when it is back kmsd serves again by itself and an
// admission answered before the outage is still there (its retransmission is answered).
#include <gtest/gtest.h>

#include "https_client.h"
#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"
#include "support/postgres_cluster.h"
#include "tokens/key_database.h"

namespace kmstest {
namespace {

using kms::client::Secret;
using kms::client::UeClient;

class KmsdOnPostgres : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testsupport::PostgresCluster::binaries()) {
      GTEST_SKIP() << testsupport::PostgresCluster::missing_message();
    }
    cluster = std::make_unique<testsupport::PostgresCluster>();
    environment = KmsdEnvironment::create();
    url = cluster->create_database() + "&pool_size=4";
    // The subscribers kms-provision put in the environment's SQLite file, moved to the
    // server (as a migration would).
    tokens::KeyDatabase from(environment->dir() + "/kms.db");
    tokens::KeyDatabase to(url);
    for (const tokens::IdentityRecord& record : from.list()) to.insert(record);
    ConfigOverrides overrides;
    overrides.database_url = url;
    kmsd = std::make_unique<KmsdProcess>(*environment,
                                         environment->write_config("kmsd-pg.toml", overrides));
  }
  void TearDown() override {
    kmsd.reset();
    environment.reset();
    cluster.reset();
  }

  kms::tools::HttpResult send(const kms::KeyRequest& request) {
    auto http = ue_connection(*kmsd, environment->pki());
    return http->post_json("/v1/key-request", kms::wire::key_request_to_json(request));
  }
  kms::KeyRequest invite(const std::string& invitee) {
    return key_request(*environment, kAlice, r_a, invitee, UeClient::make_nonce());
  }

  std::unique_ptr<testsupport::PostgresCluster> cluster;
  std::unique_ptr<KmsdEnvironment> environment;
  std::unique_ptr<KmsdProcess> kmsd;
  std::string url;
  Secret r_a = UeClient::make_nonce();
};

TEST_F(KmsdOnPostgres, RevocationOutageAndRecovery) {
  const kms::KeyRequest bob = invite(kBob);
  auto answered = send(bob);
  ASSERT_EQ(answered.status, 200u) << answered.body << kmsd->log();

  // Revoked through another connection to the same database: the very next request sees it.
  {
    tokens::KeyDatabase other_node(url);
    ASSERT_TRUE(other_node.set_status(tokens::IdentityKind::subscriber, kCarol,
                                      tokens::KeyStatus::revoked));
  }
  auto revoked = send(invite(kCarol));
  EXPECT_EQ(revoked.status, 403u) << revoked.body;
  EXPECT_NE(revoked.body.find("subscriber_revoked"), std::string::npos) << revoked.body;

  cluster->stop();
  auto during = send(invite(kCarol));
  EXPECT_EQ(during.status, 503u) << during.body;
  EXPECT_NE(during.body.find("overloaded"), std::string::npos) << during.body;
  auto retransmitted_during = send(bob);
  EXPECT_EQ(retransmitted_during.status, 503u) << retransmitted_during.body;
  EXPECT_TRUE(kmsd->running());

  cluster->start();
  // Served again without a restart of kmsd: the pools reconnect on the next request.
  EXPECT_TRUE(wait_until([&] { return send(bob).status == 200u; })) << kmsd->log();
  auto after = send(bob);  // the admission from before the outage: a retransmission
  EXPECT_EQ(after.status, 200u) << after.body;
  EXPECT_EQ(kms::wire::key_response_from_json(after.body).conference_id,
            kms::wire::key_response_from_json(answered.body).conference_id);
  EXPECT_TRUE(kmsd->running());
  EXPECT_EQ(kmsd->log().find("internal_error"), std::string::npos) << kmsd->log();
}

}  // namespace
}  // namespace kmstest
