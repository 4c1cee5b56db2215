// The same test code on both database backends: TEST_P suites instantiated with
// KMS_DATABASE_BACKENDS get a fresh, empty database of each kind (an SQLite file in a temp
// folder; a new database on the test process's PostgreSQL cluster). PostgreSQL cases skip,
// saying why, only when the PostgreSQL binaries are absent.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "postgres_cluster.h"
#include "test_token.h"

namespace testsupport {

enum class DatabaseBackend { sqlite, postgresql };

inline std::string backend_name(const ::testing::TestParamInfo<DatabaseBackend>& info) {
  return info.param == DatabaseBackend::sqlite ? "sqlite" : "postgresql";
}

// A fresh database. url() is what the key database and the registry open: a plain SQLite
// path (sqlite) or a postgresql:// URL.
class TestDatabase {
 public:
  explicit TestDatabase(DatabaseBackend backend) : backend_(backend) {
    if (backend == DatabaseBackend::sqlite) {
      url_ = dir_.path() + "/kms.db";
    } else if (PostgresCluster::binaries()) {
      url_ = PostgresCluster::shared().create_database();
    }
  }
  bool available() const { return !url_.empty(); }
  DatabaseBackend backend() const { return backend_; }
  const std::string& url() const { return url_; }
  const TempDir& dir() const { return dir_; }

 private:
  DatabaseBackend backend_;
  TempDir dir_{"kms-db"};
  std::string url_;
};

}  // namespace testsupport

#define KMS_DATABASE_BACKENDS                                    \
  ::testing::Values(::testsupport::DatabaseBackend::sqlite,      \
                    ::testsupport::DatabaseBackend::postgresql), \
      ::testsupport::backend_name

// In a test or SetUp(): skips the PostgreSQL case when the binaries are absent.
#define KMS_REQUIRE_DATABASE(database)                                   \
  do {                                                                   \
    if (!(database).available())                                         \
      GTEST_SKIP() << ::testsupport::PostgresCluster::missing_message(); \
  } while (0)
