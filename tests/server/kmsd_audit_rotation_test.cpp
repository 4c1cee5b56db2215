// Issue 9, "Audit log that lives for years", against a real kmsd over TLS: the audit log
// rotated by size (audit.rotate_bytes) while admissions are served, then moved away as
// logrotate does and reopened on SIGHUP; `kms-audit verify DIR --anchor-db` over every
// segment passes, and catches a last segment cut back at a record boundary (the anchor),
// a missing middle segment and a rewritten record in an old segment.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kms/audit/audit_segment.h"
#include "kms/audit/audit_verify.h"
#include "kms/client/ue_client.h"
#include "kms/server/wire.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"

namespace fs = std::filesystem;
using namespace kmstest;

namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> result;
  for (std::string line; std::getline(in, line);) result.push_back(line);
  return result;
}

void write_lines(const std::string& path, const std::vector<std::string>& content) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  for (const auto& line : content) out << line << '\n';
}

std::size_t count_event(const std::vector<std::string>& files, const std::string& event) {
  std::size_t n = 0;
  for (const auto& file : files) {
    for (const auto& line : lines_of(file)) {
      n += line.find("\"event\":\"" + event + "\"") != std::string::npos;
    }
  }
  return n;
}

class KmsdAuditRotationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { environment_ = KmsdEnvironment::create().release(); }
  static void TearDownTestSuite() {
    delete environment_;
    environment_ = nullptr;
  }
  static inline KmsdEnvironment* environment_ = nullptr;
};

TEST_F(KmsdAuditRotationTest, RotatedAndReopenedSegmentsVerifyAndTamperingIsCaught) {
  const std::string dir = environment_->dir() + "/audit-rotation";
  fs::create_directories(dir);
  const std::string live = dir + "/audit.log";
  ConfigOverrides overrides;
  overrides.audit_path = live;
  overrides.audit["rotate_bytes"] = "4096";  // about nine admissions per segment
  KmsdProcess kmsd(*environment_, environment_->write_config("rotation.toml", overrides));
  const TestPki& pki = environment_->pki();
  std::size_t admitted = 0;
  const auto admit = [&] {
    const auto request = key_request(*environment_, kAlice, kms::client::UeClient::make_nonce(),
                                     kBob, kms::client::UeClient::make_nonce());
    const auto response = ue_connection(kmsd, pki)->post_json(
        "/v1/key-request", kms::wire::key_request_to_json(request));
    ASSERT_EQ(response.status, 200u) << response.body;
    ++admitted;
  };
  for (int i = 0; i < 30; ++i) admit();
  const auto rotated = fetch_metric(kmsd, pki, "kms_audit_rotations_total");
  ASSERT_TRUE(rotated.has_value());
  EXPECT_GE(*rotated, 2);
  EXPECT_EQ(fetch_metric(kmsd, pki, "kms_audit_segment"), *rotated + 1);
  EXPECT_TRUE(fs::exists(kms::audit::segment_path(live, 1)));

  // logrotate (`create`): the live file moved away, an empty one made in its place, SIGHUP.
  const std::string moved = dir + "/audit.log-20261201";
  fs::rename(live, moved);
  { std::ofstream created(live); }
  fs::permissions(live, fs::perms::owner_read | fs::perms::owner_write);
  kmsd.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] {
    return kmsd.log().find("audit log reopened") != std::string::npos;
  })) << kmsd.log();
  for (int i = 0; i < 3; ++i) admit();
  EXPECT_EQ(kmsd.terminate(), 0) << kmsd.log();
  const auto header = lines_of(live).at(0);
  EXPECT_NE(header.find("\"event\":\"audit_segment\""), std::string::npos) << header;
  EXPECT_NE(header.find("\"reason\":\"reopen\""), std::string::npos) << header;

  const std::string db = environment_->dir() + "/kms.db";
  auto result = testsupport::run_command({KMS_AUDIT_BIN, "verify", dir, "--anchor-db", db});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("present and unchanged"), std::string::npos) << result.out;
  const auto files = kms::audit::segment_files_in(dir);
  EXPECT_EQ(count_event(files, "admission"), admitted);
  EXPECT_EQ(count_event(files, "audit_segment"), files.size() - 1);

  // The last segment cut back to its header: a valid chain, but the anchor is gone.
  const auto live_lines = lines_of(live);
  write_lines(live, {live_lines.front()});
  result = testsupport::run_command({KMS_AUDIT_BIN, "verify", dir});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  result = testsupport::run_command({KMS_AUDIT_BIN, "verify", dir, "--anchor-db", db});
  EXPECT_EQ(result.exit_code, 1) << result.out << result.err;
  EXPECT_NE(result.out.find("BROKEN: " + live + ": audit log truncated or altered: anchored seq"),
            std::string::npos)
      << result.out;
  write_lines(live, live_lines);

  // A middle segment gone.
  const std::string second = kms::audit::segment_path(live, 2);
  fs::rename(second, environment_->dir() + "/aside");
  result = testsupport::run_command({KMS_AUDIT_BIN, "verify", dir});
  EXPECT_EQ(result.exit_code, 1) << result.out << result.err;
  EXPECT_NE(result.out.find("segment 2 is missing"), std::string::npos) << result.out;
  fs::rename(environment_->dir() + "/aside", second);

  // A record of an old segment rewritten.
  auto first = lines_of(kms::audit::segment_path(live, 1));
  const auto at = first[1].find("sip:bob@");
  ASSERT_NE(at, std::string::npos) << first[1];
  first[1].replace(at, 8, "sip:eve@");
  write_lines(kms::audit::segment_path(live, 1), first);
  result = testsupport::run_command({KMS_AUDIT_BIN, "verify", dir, "--anchor-db", db});
  EXPECT_EQ(result.exit_code, 1) << result.out << result.err;
  EXPECT_NE(result.out.find("BROKEN: " + kms::audit::segment_path(live, 1) + ": line 2: hash "),
            std::string::npos)
      << result.out;
}

}  // namespace
