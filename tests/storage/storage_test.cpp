// The storage layer: the database URL, and PostgreSQL's failure modes on a real server
// (an unreachable server, a wrong password, a schema older or newer than this build, a
// server restarted under load), seen through the key database and the registry.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "kms/core/protocol.h"
#include "kms/core/stored_conference_registry.h"
#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "storage/postgres.h"
#include "storage/schema.h"
#include "support/test_database.h"
#include "tokens/key_check_store.h"
#include "tokens/key_database.h"

namespace {

using storage::DatabaseUrl;
using testsupport::PostgresCluster;

// The message of what `body` threw ("" if nothing).
template <typename Body>
std::string message_of(Body&& body) {
  try {
    body();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

storage::ErrorKind kind_of(std::string_view url) {
  try {
    DatabaseUrl::parse(url);
  } catch (const storage::Error& error) {
    return error.kind();
  }
  return storage::ErrorKind::other;
}

TEST(DatabaseUrl, SqliteSpellings) {
  EXPECT_EQ(DatabaseUrl::parse("kms.db").sqlite_path, "kms.db");
  EXPECT_EQ(DatabaseUrl::parse("sqlite:kms.db").sqlite_path, "kms.db");
  EXPECT_EQ(DatabaseUrl::parse("sqlite:///var/lib/kms/kms.db").sqlite_path, "/var/lib/kms/kms.db");
  EXPECT_EQ(DatabaseUrl::parse("/var/lib/kms/kms.db").backend, storage::Backend::sqlite);
  EXPECT_EQ(storage::anchor_database("sqlite:kms.db", "/etc/kms"), "sqlite:/etc/kms/kms.db");
  EXPECT_EQ(storage::anchor_database("kms.db", "/etc/kms"), "/etc/kms/kms.db");
  EXPECT_EQ(storage::anchor_database("/abs.db", "/etc/kms"), "/abs.db");
  EXPECT_EQ(storage::anchor_database("postgresql://db/kms", "/etc/kms"), "postgresql://db/kms");
}

TEST(DatabaseUrl, PostgresParametersOfOurOwnAreTakenOut) {
  const DatabaseUrl url = DatabaseUrl::parse(
      "postgresql://kms@db.example.net:5433/kms?sslmode=require&pool_size=3&"
      "password_file=/etc/kms/db.pass&migrate=check");
  EXPECT_EQ(url.backend, storage::Backend::postgresql);
  EXPECT_EQ(url.conninfo, "postgresql://kms@db.example.net:5433/kms?sslmode=require");
  EXPECT_EQ(url.pool_size, 3u);
  EXPECT_EQ(url.password_file, "/etc/kms/db.pass");
  EXPECT_EQ(url.migration, storage::MigrationPolicy::check_only);
  EXPECT_EQ(DatabaseUrl::parse("postgres:///kms").backend, storage::Backend::postgresql);
}

TEST(DatabaseUrl, BadUrlsAreRefusedWithoutEchoingThem) {
  EXPECT_EQ(kind_of(""), storage::ErrorKind::invalid_url);
  EXPECT_EQ(kind_of("mysql://db/kms"), storage::ErrorKind::invalid_url);
  EXPECT_EQ(kind_of("sqlite:"), storage::ErrorKind::invalid_url);
  EXPECT_EQ(kind_of("postgresql:///kms?pool_size=0"), storage::ErrorKind::invalid_url);
  EXPECT_EQ(kind_of("postgresql:///kms?migrate=sometimes"), storage::ErrorKind::invalid_url);
  const std::string in_userinfo =
      message_of([] { DatabaseUrl::parse("postgresql://kms:hunter2@db/kms"); });
  EXPECT_NE(in_userinfo.find("password in the URL is not accepted"), std::string::npos);
  EXPECT_EQ(in_userinfo.find("hunter2"), std::string::npos) << in_userinfo;
  const std::string in_query =
      message_of([] { DatabaseUrl::parse("postgresql://kms@db/kms?password=hunter2"); });
  EXPECT_NE(in_query.find("password in the URL is not accepted"), std::string::npos);
  EXPECT_EQ(in_query.find("hunter2"), std::string::npos) << in_query;
}

class PostgresFailures : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PostgresCluster::binaries()) GTEST_SKIP() << PostgresCluster::missing_message();
    cluster = std::make_unique<PostgresCluster>();
  }
  std::unique_ptr<PostgresCluster> cluster;
  testsupport::TempDir dir{"kms-storage"};
};

TEST_F(PostgresFailures, AnUnreachableServerIsAClearUnavailableError) {
  const std::string url = cluster->url("postgres");
  cluster->stop();
  std::string message;
  try {
    tokens::KeyDatabase database(url);
  } catch (const tokens::DatabaseUnavailableError& error) {
    message = error.what();
  }
  EXPECT_NE(message.find("cannot connect"), std::string::npos) << message;
  EXPECT_NE(message.find(cluster->folder()), std::string::npos) << message;  // which server
  const std::string registry = message_of([&] { kms::open_conference_registry(url); });
  EXPECT_NE(registry.find("cannot connect"), std::string::npos) << registry;
}

TEST_F(PostgresFailures, AWrongPasswordIsRefusedAndTheRightOneFromAFileOrTheEnvironmentWorks) {
  cluster->execute("postgres", "CREATE ROLE kms_login LOGIN PASSWORD 'right-password'");
  cluster->execute("postgres", "CREATE DATABASE kms_login OWNER kms_login");
  const std::string wrong_file = dir.path() + "/wrong.pass";
  const std::string right_file = dir.path() + "/right.pass";
  std::ofstream(wrong_file) << "wrong-password\n";
  std::ofstream(right_file) << "right-password\n";

  std::string message;
  try {
    tokens::KeyDatabase database(
        cluster->tcp_url("kms_login", "kms_login", "&password_file=" + wrong_file));
  } catch (const tokens::DatabaseUnavailableError& error) {
    message = error.what();
  }
  EXPECT_NE(message.find("password authentication failed"), std::string::npos) << message;
  EXPECT_EQ(message.find("wrong-password"), std::string::npos) << message;

  EXPECT_NO_THROW(tokens::KeyDatabase(
      cluster->tcp_url("kms_login", "kms_login", "&password_file=" + right_file)));
  ::setenv("KMS_DATABASE_PASSWORD", "right-password", 1);
  EXPECT_NO_THROW(tokens::KeyDatabase(cluster->tcp_url("kms_login", "kms_login")));
  EXPECT_NO_THROW(kms::open_conference_registry(cluster->tcp_url("kms_login", "kms_login")));
  ::unsetenv("KMS_DATABASE_PASSWORD");

  const std::string missing = message_of([&] {
    tokens::KeyDatabase(
        cluster->tcp_url("kms_login", "kms_login", "&password_file=" + dir.path() + "/none"));
  });
  EXPECT_NE(missing.find("password_file"), std::string::npos) << missing;
}

TEST_F(PostgresFailures, MigrateCheckRefusesAnOldSchemaUntilMigrated) {
  const std::string url = cluster->create_database();
  const std::string message =
      message_of([&] { tokens::KeyDatabase database(url + "&migrate=check"); });
  EXPECT_NE(message.find("key_database schema is at version 0, this build needs 2"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("kms-provision db migrate"), std::string::npos) << message;
  const std::string registry =
      message_of([&] { kms::open_conference_registry(url + "&migrate=check"); });
  EXPECT_NE(registry.find("registry schema is at version 0"), std::string::npos) << registry;

  const std::vector<std::string> lines = storage::migrate_database(DatabaseUrl::parse(url));
  EXPECT_EQ(lines,
            (std::vector<std::string>{"key_database: version 0 -> 2", "registry: version 0 -> 2"}));
  EXPECT_NO_THROW(tokens::KeyDatabase(url + "&migrate=check"));
  EXPECT_NO_THROW(kms::open_conference_registry(url + "&migrate=check"));
  // Migrating again changes nothing.
  EXPECT_EQ(storage::migrate_database(DatabaseUrl::parse(url)),
            (std::vector<std::string>{"key_database: version 2 -> 2", "registry: version 2 -> 2"}));
}

// A database made before the key check (key database version 1, identities in it) gains
// the key check table when opened (version 2), its identities kept.
TEST_F(PostgresFailures, AKeyDatabaseAtVersion1IsUpgradedWithTheKeyCheckTable) {
  const std::string url = cluster->create_database();
  const std::string name = url.substr(std::string("postgresql:///").size(),
                                      url.find('?') - std::string("postgresql:///").size());
  {
    storage::pg::Connection connection(DatabaseUrl::parse(url).conninfo, "", url);
    const storage::SchemaSteps& current =
        storage::key_database_schema(storage::Backend::postgresql);
    ASSERT_EQ(current.version(), 2);
    storage::migrate(connection, storage::SchemaSteps{"key_database", {current.steps[0]}});
  }
  cluster->execute(name,
                   "INSERT INTO kms_identities VALUES ('subscriber', 'sip:old@ims.example.net', "
                   "'active', 1, 'wrapped', NULL, 1, 1)");
  tokens::KeyCheckStore store(url + "&migrate=auto");
  EXPECT_TRUE(store.list().empty());
  tokens::RecordedKeyCheck check{"kms/master", "abcdef",     "aes-ecb-sha256", 1,
                                 "node1",      "kmsd start", "kms-node1"};
  EXPECT_TRUE(store.record_if_absent(check).inserted);
  check.kcv = "123456";
  const auto second = store.record_if_absent(check);
  EXPECT_FALSE(second.inserted);
  EXPECT_EQ(second.value.kcv, "abcdef");                 // the first recorded stays
  tokens::KeyDatabase database(url + "&migrate=check");  // at this build's version now
  EXPECT_TRUE(database.find(tokens::IdentityKind::subscriber, "sip:old@ims.example.net"));
}

TEST_F(PostgresFailures, ASchemaNewerThanThisBuildIsRefused) {
  const std::string url = cluster->create_database();
  { tokens::KeyDatabase database(url); }
  const std::string name = url.substr(std::string("postgresql:///").size(),
                                      url.find('?') - std::string("postgresql:///").size());
  cluster->execute(name, "UPDATE kms_schema SET version = 7 WHERE component = 'key_database'");
  const std::string message = message_of([&] { tokens::KeyDatabase database(url); });
  EXPECT_NE(message.find("key_database schema is at version 7, newer than this build's 2"),
            std::string::npos)
      << message;
}

constexpr std::int64_t kNow = 1'800'000'000;

kms::Admission admission_number(int n) {
  kms::Admission a;
  a.chair_id = "sip:alice@ims.example.net";
  a.chair_nonce = hsm::SecureBytes(kms::Bytes(32, 1));
  a.conference_id = kms::protocol::conference_id(a.chair_id, a.chair_nonce.view());
  a.chair_key_id = kms::protocol::key_id(a.conference_id, a.chair_id, a.chair_nonce.view());
  a.responder_id = "sip:m" + std::to_string(n) + "@ims.example.net";
  kms::Bytes nonce(32, 2);
  nonce[0] = static_cast<std::uint8_t>(n);
  nonce[1] = static_cast<std::uint8_t>(n >> 8);
  a.responder_nonce = hsm::SecureBytes(nonce);
  a.responder_key_id =
      kms::protocol::key_id(a.conference_id, a.responder_id, a.responder_nonce.view());
  a.profile = 1;
  a.suite = 1;
  kms::Bytes digest(32, 3);
  digest[0] = static_cast<std::uint8_t>(n);
  digest[1] = static_cast<std::uint8_t>(n >> 8);
  a.request_digest = digest;
  digest[2] = 4;
  a.envelopes[0] = {digest, kNow + 300};
  digest[2] = 5;
  a.envelopes[1] = {digest, kNow + 300};
  a.now = kNow;
  a.conference_expires_at = kNow + 3600;
  return a;
}

// Admissions and key lookups keep coming while the server stops and starts: meanwhile they
// fail as overloaded / DatabaseUnavailableError (kmsd's 503), never anything else; after the
// restart both reconnect by themselves; every admission that was acknowledged is there.
TEST_F(PostgresFailures, ARestartUnderLoadLosesNothingAcknowledgedAndHealsByItself) {
  const std::string url = cluster->create_database();
  const auto registry = kms::open_conference_registry(url);
  tokens::KeyDatabase keys(url);
  tokens::IdentityRecord subscriber;
  subscriber.identity = "sip:a@example.net";
  subscriber.wrapped_key = hsm::Bytes(8, 1);
  keys.insert(subscriber);

  std::atomic<bool> stop{false};
  std::atomic<int> next{0};
  std::mutex mutex;
  std::vector<int> acknowledged;
  std::map<std::string, int> failures;  // error code or exception type -> count
  std::atomic<int> refused_while_down{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&] {
      while (!stop) {
        const int n = next++;
        try {
          registry->admit(admission_number(n), [](kms::AdmissionOutcome) {});
          std::lock_guard lock(mutex);
          acknowledged.push_back(n);
        } catch (const kms::ProtocolError& error) {
          std::lock_guard lock(mutex);
          ++failures[std::string(kms::error_code_name(error.code()))];
          ++refused_while_down;
        }
        try {
          (void)keys.find(tokens::IdentityKind::subscriber, "sip:a@example.net");
        } catch (const tokens::DatabaseUnavailableError&) {
          ++refused_while_down;
        } catch (const std::exception& error) {
          std::lock_guard lock(mutex);
          ++failures[std::string("key database: ") + error.what()];
        }
      }
    });
  }
  // A generous bound only so that a registry that never heals fails instead of hanging.
  auto eventually = [](const std::function<bool()>& condition) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (!condition()) {
      if (std::chrono::steady_clock::now() > give_up) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  };
  auto acknowledged_count = [&] {
    std::lock_guard lock(mutex);
    return acknowledged.size();
  };
  const bool loaded = eventually([&] { return acknowledged_count() >= 20; });
  EXPECT_TRUE(loaded);
  if (loaded) {
    cluster->stop();
    EXPECT_TRUE(eventually([&] { return refused_while_down >= 8; }));
    cluster->start();
    const std::size_t before_restart = acknowledged_count();
    EXPECT_TRUE(eventually([&] { return acknowledged_count() >= before_restart + 20; }))
        << "the registry did not reconnect by itself";
  }
  stop = true;
  for (std::thread& thread : load) thread.join();

  for (const auto& [what, count] : failures) {
    EXPECT_EQ(what, "overloaded") << count << " failures";
  }
  const auto conference = registry->find(admission_number(0).conference_id);
  ASSERT_TRUE(conference);
  std::set<std::string> present;
  for (const kms::ConferenceMember& member : conference->members) present.insert(member.member_id);
  for (int n : acknowledged) {
    EXPECT_TRUE(present.count(admission_number(n).responder_id)) << "lost admission " << n;
  }
  EXPECT_TRUE(keys.find(tokens::IdentityKind::subscriber, "sip:a@example.net"));
}

}  // namespace
