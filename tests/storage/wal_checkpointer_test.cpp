// storage::sqlite::WalCheckpointer on a real SQLite file: the writer's commits no longer
// checkpoint (its WAL grows past SQLite's 1,000-page threshold), the checkpointer's thread
// copies every page back without the writer's help, the WAL then starts over, and nothing
// committed is lost across a reopen.
#include "storage/wal_checkpointer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "storage/sqlite.h"
#include "support/test_token.h"

namespace {

namespace sql = storage::sqlite;

void insert_page_sized_rows(sql::Connection& db, int first, int count) {
  const std::vector<std::uint8_t> blob(4000, 0x5a);  // about a page each
  for (int i = first; i < first + count; ++i) {
    sql::Transaction transaction(db);
    sql::Query(db, "INSERT INTO rows (id, payload) VALUES (?1, ?2)")
        .bind(1, static_cast<std::int64_t>(i))
        .bind(2, blob)
        .run();
    transaction.commit();
  }
}

std::int64_t row_count(sql::Connection& db) {
  sql::Query count(db, "SELECT count(*) FROM rows");
  return count.step() ? count.integer(0) : -1;
}

sql::OpenOptions full_sync() {
  sql::OpenOptions options;
  options.sync_full = true;
  return options;
}

// A new database in `dir` with the test's table, opened for writing.
std::unique_ptr<sql::Connection> new_database(const std::string& path,
                                              const sql::OpenOptions& options = full_sync()) {
  auto db = std::make_unique<sql::Connection>(path, options);
  db->exec("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)");
  return db;
}

template <typename Condition>
bool eventually(Condition condition) {
  for (int i = 0; i < 500; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

TEST(WalCheckpointer, TheWriterNoLongerCheckpointsAndTheThreadCopiesEverythingBack) {
  testsupport::TempDir dir("kms-wal");
  const std::string path = dir.path() + "/db.sqlite";
  const sql::OpenOptions options = full_sync();
  const auto db = new_database(path);
  sql::Connection& writer = *db;

  std::atomic<int> wal_pages{0};
  writer.on_wal_commit([&](int pages) { wal_pages = pages; });
  insert_page_sized_rows(writer, 0, 1500);
  // SQLite's automatic checkpoint would have started the WAL over at 1,000 pages.
  EXPECT_GE(wal_pages.load(), 1500);

  {
    sql::CheckpointerOptions checkpoint_options;
    checkpoint_options.interval = std::chrono::milliseconds(20);
    sql::WalCheckpointer checkpointer(path, options, checkpoint_options);
    writer.on_wal_commit([&](int pages) {
      wal_pages = pages;
      checkpointer.committed(pages);
    });
    insert_page_sized_rows(writer, 1500, 1);
    ASSERT_TRUE(eventually([&] {
      const sql::CheckpointStats stats = checkpointer.stats();
      return stats.checkpoints >= 1 && stats.last_wal_pages >= 1500 && stats.last_pages_left == 0;
    })) << "checkpoints "
        << checkpointer.stats().checkpoints << ", WAL pages " << checkpointer.stats().last_wal_pages
        << ", left " << checkpointer.stats().last_pages_left;
    EXPECT_EQ(checkpointer.stats().failures, 0u);
    // Everything was copied back: the next commit starts the WAL from its beginning.
    insert_page_sized_rows(writer, 1501, 1);
    EXPECT_LT(wal_pages.load(), 10);
    writer.on_wal_commit({});
  }
  EXPECT_EQ(row_count(writer), 1502);
}

TEST(WalCheckpointer, ACommitThatFillsTheWalWakesTheThreadBeforeItsInterval) {
  testsupport::TempDir dir("kms-wal");
  const std::string path = dir.path() + "/db.sqlite";
  const auto db = new_database(path, {});
  sql::Connection& writer = *db;
  sql::CheckpointerOptions checkpoint_options;
  checkpoint_options.interval = std::chrono::hours(1);  // only the wake-up can trigger it
  checkpoint_options.wake_at_pages = 1000;
  sql::WalCheckpointer checkpointer(path, {}, checkpoint_options);
  writer.on_wal_commit([&](int pages) { checkpointer.committed(pages); });
  insert_page_sized_rows(writer, 0, 100);  // one or two WAL pages per commit
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(checkpointer.stats().checkpoints, 0u) << "woken below wake_at_pages";
  insert_page_sized_rows(writer, 100, 1000);
  EXPECT_TRUE(eventually([&] { return checkpointer.stats().checkpoints >= 1; }));
  writer.on_wal_commit({});
}

TEST(WalCheckpointer, RowsCommittedWhileItRunsSurviveAReopen) {
  testsupport::TempDir dir("kms-wal");
  const std::string path = dir.path() + "/db.sqlite";
  {
    const sql::OpenOptions options = full_sync();
    const auto db = new_database(path);
    sql::Connection& writer = *db;
    sql::CheckpointerOptions checkpoint_options;
    checkpoint_options.interval = std::chrono::milliseconds(1);
    checkpoint_options.wake_at_pages = 1;
    sql::WalCheckpointer checkpointer(path, options, checkpoint_options);
    writer.on_wal_commit([&](int pages) { checkpointer.committed(pages); });
    insert_page_sized_rows(writer, 0, 3000);  // checkpoints and WAL restarts interleave
    writer.on_wal_commit({});
    EXPECT_GE(checkpointer.stats().checkpoints, 2u);
  }
  sql::Connection reader(path);
  EXPECT_EQ(row_count(reader), 3000);
  sql::Query check(reader, "PRAGMA integrity_check");
  ASSERT_TRUE(check.step());
  EXPECT_EQ(check.text(0), "ok");
}

}  // namespace
