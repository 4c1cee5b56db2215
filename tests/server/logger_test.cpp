// kmsd's log lines with journald priority prefixes (docs/SERVER.md "Logs"): <3> error,
// <4> warn, <6> info, <7> debug at the start of each line when enabled, nothing otherwise;
// the line after the prefix is what it would be without (same escaping). And the
// $JOURNAL_STREAM check that turns them on by default under systemd.
#include "kms/server/logger.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "test_token.h"

namespace {

using kms::server::LogFormat;
using kms::server::Logger;
using kms::server::LogLevel;

std::string log_one(Logger& logger, LogLevel level, const std::string& message,
                    const kms::server::LogFields& fields = {}) {
  testing::internal::CaptureStderr();
  logger.log(level, message, fields);
  return testing::internal::GetCapturedStderr();
}

// The line without its time (which differs from call to call).
std::string without_time(const std::string& line) {
  const auto at = line.find("time=");
  if (at != std::string::npos) return line.substr(0, at) + line.substr(line.find(' ', at));
  const auto json = line.find("\"time\":\"");
  return line.substr(0, json) + line.substr(line.find("\",", json + 8) + 2);
}

TEST(LoggerTest, EachLevelGetsItsJournalPriority) {
  for (const LogFormat format : {LogFormat::kv, LogFormat::json}) {
    Logger logger(LogLevel::debug, format, true);
    EXPECT_EQ(log_one(logger, LogLevel::error, "e").substr(0, 3), "<3>");
    EXPECT_EQ(log_one(logger, LogLevel::warn, "w").substr(0, 3), "<4>");
    EXPECT_EQ(log_one(logger, LogLevel::info, "i").substr(0, 3), "<6>");
    EXPECT_EQ(log_one(logger, LogLevel::debug, "d").substr(0, 3), "<7>");
  }
}

TEST(LoggerTest, WithoutThePrefixALineStartsWithItsFirstField) {
  Logger kv(LogLevel::debug, LogFormat::kv);
  EXPECT_EQ(log_one(kv, LogLevel::error, "e").substr(0, 5), "time=");
  Logger json(LogLevel::debug, LogFormat::json);
  EXPECT_EQ(log_one(json, LogLevel::warn, "w").substr(0, 9), "{\"time\":\"");
}

TEST(LoggerTest, ThePrefixLeavesTheEscapedLineAsItWas) {
  // A hostile value: a newline that would forge a second line, a quote, a control byte.
  const kms::server::LogFields fields = {{"path", "/x\nlevel=error msg=forged \"\x01"},
                                         {"peer", "127.0.0.1:1"}};
  for (const LogFormat format : {LogFormat::kv, LogFormat::json}) {
    Logger plain(LogLevel::info, format);
    Logger journal(LogLevel::info, format, true);
    const std::string without = log_one(plain, LogLevel::info, "request", fields);
    const std::string with = log_one(journal, LogLevel::info, "request", fields);
    EXPECT_EQ(without_time(with), "<6>" + without_time(without));
    EXPECT_EQ(with.find('\n'), with.size() - 1) << with;  // still one line
  }
}

TEST(LoggerTest, DisabledLevelsPrintNothingWithThePrefixEither) {
  Logger logger(LogLevel::warn, LogFormat::kv, true);
  EXPECT_EQ(log_one(logger, LogLevel::info, "quiet"), "");
  EXPECT_EQ(log_one(logger, LogLevel::debug, "quiet"), "");
}

TEST(JournalStreamTest, MatchesOnlyTheDeviceAndInodeOfTheDescriptor) {
  testsupport::TempDir dir;
  const std::string path = dir.path() + "/stream";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  struct stat status {};
  ASSERT_EQ(::fstat(fd, &status), 0);
  const std::string device = std::to_string(status.st_dev);
  const std::string inode = std::to_string(status.st_ino);
  EXPECT_TRUE(kms::server::is_journal_stream(fd, (device + ":" + inode).c_str()));

  const std::string other_inode = std::to_string(status.st_ino + 1);
  const std::string other_device = std::to_string(status.st_dev + 1);
  for (const std::string& value :
       {device + ":" + other_inode, other_device + ":" + inode, std::string(), device, device + ":",
        ":" + inode, device + ":" + inode + "x", "-" + device + ":" + inode}) {
    SCOPED_TRACE(value);
    EXPECT_FALSE(kms::server::is_journal_stream(fd, value.c_str()));
  }
  EXPECT_FALSE(kms::server::is_journal_stream(fd, nullptr));
  ::close(fd);
  // A closed descriptor is no stream at all.
  EXPECT_FALSE(kms::server::is_journal_stream(fd, (device + ":" + inode).c_str()));
}

}  // namespace
