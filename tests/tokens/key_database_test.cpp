#include "tokens/key_database.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "support/test_database.h"

namespace {

using tokens::IdentityKind;

tokens::IdentityRecord record(const std::string& identity, IdentityKind kind) {
  tokens::IdentityRecord r;
  r.identity = identity;
  r.kind = kind;
  r.wrapped_key = {1, 2, 3, 4, 5, 6, 7, 8};
  return r;
}

// The same tests on SQLite and PostgreSQL.
class KeyDatabaseOn : public ::testing::TestWithParam<testsupport::DatabaseBackend> {
 protected:
  void SetUp() override { KMS_REQUIRE_DATABASE(database); }
  testsupport::TestDatabase database{GetParam()};
};

TEST_P(KeyDatabaseOn, InsertFindListCount) {
  tokens::KeyDatabase db(database.url());
  db.insert(record("sip:a@example.net", IdentityKind::subscriber));
  db.insert(record("sip:b@example.net", IdentityKind::subscriber));
  db.insert(record("sip:a@example.net", IdentityKind::bridge));  // same ID, other kind
  EXPECT_THROW(db.insert(record("sip:a@example.net", IdentityKind::subscriber)),
               tokens::DuplicateIdentityError);

  const auto found = db.find(IdentityKind::subscriber, "sip:a@example.net");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->status, tokens::KeyStatus::active);
  EXPECT_EQ(found->key_version, 1u);
  EXPECT_EQ(found->wrapped_key, (hsm::Bytes{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_GT(found->created_at, 0);
  EXPECT_FALSE(db.find(IdentityKind::bridge, "sip:b@example.net"));
  EXPECT_EQ(db.list(IdentityKind::subscriber).size(), 2u);
  EXPECT_EQ(db.list().size(), 3u);
  EXPECT_EQ(db.count(IdentityKind::subscriber), 2u);

  EXPECT_TRUE(
      db.set_status(IdentityKind::subscriber, "sip:b@example.net", tokens::KeyStatus::revoked));
  EXPECT_FALSE(
      db.set_status(IdentityKind::subscriber, "sip:zz@example.net", tokens::KeyStatus::revoked));
  EXPECT_EQ(db.count(IdentityKind::subscriber, tokens::KeyStatus::revoked), 1u);

  const hsm::Bytes rotated{9, 9, 9, 9, 9, 9, 9, 9};
  EXPECT_TRUE(db.replace_key(IdentityKind::subscriber, "sip:b@example.net", 2,
                             tokens::KeyStoreMode::wrapped, rotated));
  const auto after = db.find(IdentityKind::subscriber, "sip:b@example.net");
  EXPECT_EQ(after->key_version, 2u);
  EXPECT_EQ(after->status, tokens::KeyStatus::active);
  EXPECT_EQ(after->wrapped_key, rotated);
}

TEST_P(KeyDatabaseOn, TransactionsRollBackUnlessCommitted) {
  tokens::KeyDatabase db(database.url());
  {
    tokens::KeyDatabase::Transaction transaction(db);
    db.insert(record("sip:gone@example.net", IdentityKind::subscriber));
  }
  EXPECT_FALSE(db.find(IdentityKind::subscriber, "sip:gone@example.net"));
  {
    tokens::KeyDatabase::Transaction transaction(db);
    db.insert(record("sip:kept@example.net", IdentityKind::subscriber));
    // A failed statement inside the transaction does not undo the others.
    EXPECT_THROW(db.insert(record("sip:kept@example.net", IdentityKind::subscriber)),
                 tokens::DuplicateIdentityError);
    transaction.commit();
  }
  EXPECT_TRUE(db.find(IdentityKind::subscriber, "sip:kept@example.net"));
  // A second connection (another process: kmsd while kms-provision writes) sees it.
  tokens::KeyDatabase other(database.url());
  EXPECT_TRUE(other.find(IdentityKind::subscriber, "sip:kept@example.net"));
}

// Token mode keeps no wrapped key: it reads back empty on both backends.
TEST_P(KeyDatabaseOn, TokenModeRecordHasNoWrappedKey) {
  tokens::KeyDatabase db(database.url());
  tokens::IdentityRecord token_mode = record("sip:t@example.net", IdentityKind::subscriber);
  token_mode.mode = tokens::KeyStoreMode::token;
  token_mode.wrapped_key.clear();
  db.insert(token_mode);
  const auto found = db.find(IdentityKind::subscriber, "sip:t@example.net");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->mode, tokens::KeyStoreMode::token);
  EXPECT_TRUE(found->wrapped_key.empty());
}

// Two processes (kms-provision and a kmsd node, or two nodes): a revocation or rotation
// written through one is what the other finds at its very next lookup (no cache between).
TEST_P(KeyDatabaseOn, AChangeThroughOneInstanceIsSeenByAnotherAtOnce) {
  tokens::KeyDatabase provision(database.url());
  tokens::KeyDatabase node(database.url());
  provision.insert(record("sip:a@example.net", IdentityKind::subscriber));
  EXPECT_EQ(node.find(IdentityKind::subscriber, "sip:a@example.net")->status,
            tokens::KeyStatus::active);
  ASSERT_TRUE(provision.set_status(IdentityKind::subscriber, "sip:a@example.net",
                                   tokens::KeyStatus::revoked));
  EXPECT_EQ(node.find(IdentityKind::subscriber, "sip:a@example.net")->status,
            tokens::KeyStatus::revoked);
  ASSERT_TRUE(provision.replace_key(IdentityKind::subscriber, "sip:a@example.net", 2,
                                    tokens::KeyStoreMode::wrapped, hsm::Bytes(8, 7)));
  EXPECT_EQ(node.find(IdentityKind::subscriber, "sip:a@example.net")->key_version, 2u);
}

// Lookups from many threads while another thread provisions in a transaction.
TEST_P(KeyDatabaseOn, ConcurrentLookupsDuringATransaction) {
  tokens::KeyDatabase db(database.url());
  db.insert(record("sip:a@example.net", IdentityKind::subscriber));
  std::atomic<int> found{0};
  std::vector<std::thread> readers;
  {
    tokens::KeyDatabase::Transaction transaction(db);
    for (int n = 0; n < 20; ++n)
      db.insert(record("sip:n" + std::to_string(n) + "@x", IdentityKind::subscriber));
    for (int t = 0; t < 4; ++t) {
      readers.emplace_back([&] {
        for (int i = 0; i < 25; ++i) {
          if (db.find(IdentityKind::subscriber, "sip:a@example.net")) ++found;
        }
      });
    }
    transaction.commit();
  }
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(found.load(), 100);
  EXPECT_EQ(db.count(IdentityKind::subscriber), 21u);
}

INSTANTIATE_TEST_SUITE_P(Backends, KeyDatabaseOn, KMS_DATABASE_BACKENDS);

TEST(KeyDatabase, UnopenableFileIsADatabaseError) {
  EXPECT_THROW(tokens::KeyDatabase("/nonexistent/dir/kms.db"), tokens::DatabaseError);
  EXPECT_TRUE(tokens::prepare_database_file("/nonexistent/dir/kms.db").empty());
  EXPECT_FALSE(std::filesystem::exists("/nonexistent/dir"));
}

// kms.db holds wrapped root keys and conference nonces: created 0600 whatever the umask,
// and its -wal and -shm files too (SQLite gives them the database's mode).
TEST(KeyDatabase, NewDatabaseFilesAreOwnerOnlyWhateverTheUmask) {
  testsupport::TempDir dir("kms-db-test");
  const std::string path = dir.path() + "/kms.db";
  const mode_t previous = ::umask(0);
  {
    tokens::KeyDatabase db(path);
    EXPECT_TRUE(db.warnings().empty());
    db.insert(record("sip:a@example.net", IdentityKind::subscriber));
    tokens::KeyDatabase reader(path);  // a second connection: the -shm file is in use
    EXPECT_TRUE(reader.find(IdentityKind::subscriber, "sip:a@example.net"));
    for (const std::string& file : {path, path + "-wal", path + "-shm"}) {
      EXPECT_EQ(testsupport::file_mode(file), 0600) << file;
    }
  }
  ::umask(previous);
  EXPECT_EQ(testsupport::file_mode(path), 0600);
}

// An existing database that group or others may read is used, with a warning naming each
// such file and its mode (kmsd logs it, kms-provision prints it); none once it is 0600.
TEST(KeyDatabase, ExistingDatabaseReadableByOthersIsReported) {
  testsupport::TempDir dir("kms-db-test");
  const std::string path = dir.path() + "/kms.db";
  { tokens::KeyDatabase db(path); }
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  {
    tokens::KeyDatabase db(path);
    ASSERT_EQ(db.warnings().size(), 1u);
    EXPECT_EQ(
        db.warnings().front(),
        "database file " + path +
            " has mode 0644: group or others may read or write it (wrapped root keys, conference "
            "nonces); chmod 600 " +
            path);
    db.insert(record("sip:a@example.net", IdentityKind::subscriber));
    EXPECT_EQ(testsupport::file_mode(path + "-wal"), 0644);     // SQLite copies the mode
    EXPECT_EQ(tokens::prepare_database_file(path).size(), 3u);  // kms.db, -wal, -shm
  }
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_EQ(tokens::prepare_database_file(path).size(), 1u);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(tokens::prepare_database_file(path).empty());
  EXPECT_TRUE(tokens::KeyDatabase(path).warnings().empty());
}

}  // namespace
