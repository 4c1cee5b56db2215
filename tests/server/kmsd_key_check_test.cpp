// The start-time key check (docs/OPERATIONS.md "The key check at start"), end to end: real
// tokens (SoftHSM and NSS softoken), real databases (SQLite and PostgreSQL), kmsd as a
// process, kms-provision as a process. Two environments per token kind: "a", the
// deployment's keys, and "b", a token that holds other keys. Every test gets a fresh
// database.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <memory>
#include <tuple>

#include "kmsd_fixture.h"
#include "support/test_database.h"

namespace kmstest {
namespace {

using testsupport::DatabaseBackend;
using testsupport::TokenKind;

constexpr int kExitKeyMismatch = 3;  // kmsd (docs/SERVER.md)
constexpr int kProvisionKeyMismatch = 15;

using Param = std::tuple<TokenKind, DatabaseBackend>;

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return testsupport::token_kind_name(std::get<0>(info.param)) + "_" +
         (std::get<1>(info.param) == DatabaseBackend::sqlite ? "sqlite" : "postgresql");
}

class KmsdKeyCheck : public ::testing::TestWithParam<Param> {
 protected:
  struct Environments {
    std::unique_ptr<KmsdEnvironment> a, b;
  };
  static void TearDownTestSuite() { environments_.clear(); }

  void SetUp() override {
    database_ = std::make_unique<testsupport::TestDatabase>(std::get<1>(GetParam()));
    KMS_REQUIRE_DATABASE(*database_);
    Environments& made = environments_[std::get<0>(GetParam())];
    if (!made.a) {
      made.a = KmsdEnvironment::create(std::get<0>(GetParam()));
      made.b = KmsdEnvironment::create(std::get<0>(GetParam()));
    }
    a_ = made.a.get();
    b_ = made.b.get();
  }

  // kms-provision on `environment`'s token, against this test's database.
  testsupport::CommandResult provision(KmsdEnvironment& environment,
                                       std::vector<std::string> args) const {
    args.insert(args.begin(), {"--database", database_->url()});
    return environment.provision(std::move(args));
  }
  // A configuration for `environment`'s token on this test's database.
  std::string config(KmsdEnvironment& environment, const std::string& node) const {
    ConfigOverrides overrides;
    overrides.database_url = database_->url();
    overrides.server["node_name"] = "\"" + node + "\"";
    return environment.write_config(node + ".toml", overrides);
  }
  // kmsd run to its end, for a start that must fail (`timeout` ends a kmsd that wrongly
  // starts, so the test fails instead of hanging).
  testsupport::CommandResult run_kmsd(KmsdEnvironment& environment, const std::string& node) {
    return testsupport::run_command({"timeout", "120", KMSD_BIN, "--config",
                                     config(environment, node), "--listen", "127.0.0.1:0"},
                                    environment.token().environment());
  }
  // The token's KCVs as `status` shows them (label -> hex).
  std::map<std::string, std::string> kcvs(KmsdEnvironment& environment) const {
    const auto status = environment.provision({"--json", "status"});
    EXPECT_EQ(status.exit_code, 0) << status.err;
    std::map<std::string, std::string> out;
    const boost::json::value parsed = boost::json::parse(status.out);
    for (const auto& item : parsed.at("kcv").as_object()) {
      out[item.key()] = std::string(item.value().as_string());
    }
    return out;
  }
  // key-check --json: label -> the recorded value's description ("" when none recorded).
  std::map<std::string, boost::json::object> key_check(KmsdEnvironment& environment,
                                                       int expected_exit = 0) const {
    const auto checked = provision(environment, {"--json", "key-check"});
    EXPECT_EQ(checked.exit_code, expected_exit) << checked.out << checked.err;
    std::map<std::string, boost::json::object> out;
    const boost::json::value parsed = boost::json::parse(checked.out);
    for (const auto& key : parsed.at("keys").as_array()) {
      out[std::string(key.at("label").as_string())] = key.as_object();
    }
    return out;
  }

  static inline std::map<TokenKind, Environments> environments_;
  std::unique_ptr<testsupport::TestDatabase> database_;
  KmsdEnvironment* a_ = nullptr;
  KmsdEnvironment* b_ = nullptr;
};

TEST_P(KmsdKeyCheck, ATokenWithOtherKeysIsRefusedAtStartNamingTheKeyBothValuesAndTheFix) {
  const auto recorded = provision(*a_, {"init"});  // keys present: their values recorded
  ASSERT_EQ(recorded.exit_code, 0) << recorded.err;
  EXPECT_NE(recorded.out.find("key check recorded  kms/master"), std::string::npos) << recorded.out;
  const auto ours = kcvs(*a_);
  const auto theirs = kcvs(*b_);
  ASSERT_TRUE(ours.contains("kms/master") && ours.contains("kms/storage"));
  ASSERT_NE(ours.at("kms/master"), theirs.at("kms/master"));

  const auto refused = run_kmsd(*b_, "intruder");
  EXPECT_EQ(refused.exit_code, kExitKeyMismatch) << refused.err;
  for (const std::string& expected :
       {std::string("kms/master"), std::string("kms/storage"), theirs.at("kms/master"),
        ours.at("kms/master"), theirs.at("kms/storage"), ours.at("kms/storage"),
        std::string("kms-provision init"), std::string("clone import"),
        std::string("key-check --record")}) {
    EXPECT_NE(refused.err.find(expected), std::string::npos) << expected << "\n" << refused.err;
  }
  EXPECT_EQ(refused.err.find("listening"), std::string::npos) << refused.err;
  // kms-provision key-check says the same, without changing anything.
  const auto checked = key_check(*b_, kProvisionKeyMismatch);
  EXPECT_EQ(checked.at("kms/master").at("state").as_string(), "differs");
  EXPECT_EQ(key_check(*a_).at("kms/master").at("state").as_string(), "matches");
}

TEST_P(KmsdKeyCheck, TheSameKeysStartAndTheLogSaysTheyMatch) {
  ASSERT_EQ(provision(*a_, {"init"}).exit_code, 0);
  KmsdProcess node(*a_, config(*a_, "node1"));
  EXPECT_TRUE(wait_until([&] {
    return node.log().find("the token's KMS keys match the values recorded") != std::string::npos;
  })) << node.log();
  EXPECT_NE(node.log().find(kcvs(*a_).at("kms/master")), std::string::npos) << node.log();
  // A transport key made by init has no check blob (on NSS none ever has): said, not refused.
  EXPECT_NE(node.log().find("not checked"), std::string::npos) << node.log();
  EXPECT_EQ(node.terminate(), 0);
}

TEST_P(KmsdKeyCheck, InitForceReplacesTheRecordedValuesAndThatTokenThenStarts) {
  ASSERT_EQ(provision(*a_, {"init"}).exit_code, 0);
  ASSERT_EQ(run_kmsd(*b_, "node2").exit_code, kExitKeyMismatch);
  // New keys in b's token (as after a lost deployment): their values replace a's.
  const auto forced = provision(*b_, {"init", "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(forced.out.find("key check replaced  kms/master " + kcvs(*b_).at("kms/master")),
            std::string::npos)
      << forced.out;
  const auto recorded = key_check(*b_);
  EXPECT_EQ(recorded.at("kms/master").at("state").as_string(), "matches");
  EXPECT_NE(std::string(recorded.at("kms/master").at("recorded").as_string())
                .find("kms-provision init --force"),
            std::string::npos);
  {
    KmsdProcess node(*b_, config(*b_, "node2"));
    EXPECT_TRUE(wait_until([&] {
      return node.log().find("match the values recorded") != std::string::npos;
    })) << node.log();
  }
  // Now a's token is the odd one out.
  const auto refused = run_kmsd(*a_, "node1");
  EXPECT_EQ(refused.exit_code, kExitKeyMismatch) << refused.err;
  EXPECT_NE(refused.err.find("kms-provision init --force"), std::string::npos) << refused.err;
}

TEST_P(KmsdKeyCheck, ADatabaseWithoutRecordedValuesGetsThemAtTheFirstStart) {
  // A database made before the key check (or by `db migrate`): nothing recorded.
  for (const auto& [label, key] : key_check(*a_)) {
    EXPECT_EQ(key.at("state").as_string(),
              key.at("kcv").as_string().empty() ? "no kcv" : "not recorded")
        << label;
  }
  {
    KmsdProcess node(*a_, config(*a_, "first"));
    EXPECT_TRUE(wait_until([&] {
      return node.log().find("this token's values are now recorded") != std::string::npos;
    })) << node.log();
  }
  const auto recorded = key_check(*a_);
  const auto ours = kcvs(*a_);
  for (const std::string label : {"kms/master", "kms/storage"}) {
    EXPECT_EQ(recorded.at(label).at("state").as_string(), "matches") << label;
    EXPECT_EQ(recorded.at(label).at("kcv").as_string(), ours.at(label));
    const std::string origin(recorded.at(label).at("recorded").as_string());
    EXPECT_NE(origin.find("kmsd start on first"), std::string::npos) << origin;
  }
  // The values recorded are enforced from then on.
  EXPECT_EQ(run_kmsd(*b_, "second").exit_code, kExitKeyMismatch);
}

TEST_P(KmsdKeyCheck, KeyCheckRecordMakesThisTokensValuesTheRecordedOnes) {
  ASSERT_EQ(provision(*a_, {"init"}).exit_code, 0);
  const auto recorded = provision(*b_, {"key-check", "--record"});
  ASSERT_EQ(recorded.exit_code, 0) << recorded.err;
  EXPECT_NE(recorded.out.find("key check replaced  kms/master"), std::string::npos) << recorded.out;
  {
    KmsdProcess node(*b_, config(*b_, "node2"));
    EXPECT_TRUE(wait_until([&] {
      return node.log().find("match the values recorded") != std::string::npos;
    })) << node.log();
  }
  EXPECT_EQ(run_kmsd(*a_, "node1").exit_code, kExitKeyMismatch);
  // init on a token whose kept keys differ from the record refuses as well (exit 15).
  const auto init = provision(*a_, {"init"});
  EXPECT_EQ(init.exit_code, kProvisionKeyMismatch) << init.out << init.err;
  EXPECT_NE(init.err.find("kms/master"), std::string::npos) << init.err;
}

INSTANTIATE_TEST_SUITE_P(TokensAndDatabases, KmsdKeyCheck,
                         ::testing::Combine(::testing::Values(TokenKind::softhsm, TokenKind::nss),
                                            ::testing::Values(DatabaseBackend::sqlite,
                                                              DatabaseBackend::postgresql)),
                         param_name);

}  // namespace
}  // namespace kmstest
