#include "bulk_file.h"

#include <gtest/gtest.h>

#include "errors.h"

namespace {

TEST(BulkFile, CsvWithHeaderCommentsQuotesAndBadLines) {
  const auto file = provisioning::parse_bulk_text(
      "identity,wrapped_key\n"
      "sip:a@example.net,00ff\n"
      "\n"
      "# comment\n"
      "\"sip:b,c@example.net\", \"aabb\"\n"
      "sip:c@example.net\n"
      "sip:d@example.net,11,22\n"
      "\"sip:e@example.net,1122\n"
      "sip:f@example.net,3344\r\n",
      "csv");
  ASSERT_EQ(file.entries.size(), 3u);
  EXPECT_EQ(file.entries[0].number, 2u);
  EXPECT_EQ(file.entries[0].identity, "sip:a@example.net");
  EXPECT_EQ(file.entries[0].wrapped_key, "00ff");
  EXPECT_EQ(file.entries[1].identity, "sip:b,c@example.net");  // a comma inside quotes
  EXPECT_EQ(file.entries[1].wrapped_key, "aabb");
  EXPECT_EQ(file.entries[2].number, 9u);
  EXPECT_EQ(file.entries[2].wrapped_key, "3344");
  ASSERT_EQ(file.problems.size(), 3u);
  EXPECT_EQ(file.problems[0].number, 6u);
  EXPECT_EQ(file.problems[1].number, 7u);
  EXPECT_EQ(file.problems[2].number, 8u);
  EXPECT_EQ(file.problems[2].reason, "unterminated quote");
}

TEST(BulkFile, JsonArrayAndJsonLines) {
  const auto array = provisioning::parse_bulk_text(
      R"([{"identity": "sip:a@x.net", "wrapped_key": "00"}, {"identity": 5}, 7])", "json");
  EXPECT_EQ(array.unit, "entry");
  ASSERT_EQ(array.entries.size(), 1u);
  ASSERT_EQ(array.problems.size(), 2u);
  EXPECT_EQ(array.problems[0].number, 2u);
  EXPECT_EQ(array.problems[1].number, 3u);

  const auto lines = provisioning::parse_bulk_text(
      "{\"identity\": \"sip:a@x.net\", \"wrapped_key\": \"00\"}\n{oops\n\n"
      "{\"identity\": \"sip:b@x.net\", \"wrapped_key\": \"11\"}\n",
      "json");
  EXPECT_EQ(lines.unit, "line");
  ASSERT_EQ(lines.entries.size(), 2u);
  EXPECT_EQ(lines.entries[1].number, 4u);
  ASSERT_EQ(lines.problems.size(), 1u);
  EXPECT_EQ(lines.problems[0].number, 2u);

  EXPECT_THROW(provisioning::parse_bulk_text("[1, 2", "json"), provisioning::FileError);
  EXPECT_THROW(provisioning::parse_bulk_text("", "xml"), provisioning::UsageError);
}

}  // namespace
