// /metrics against what docs promise: every metric the Grafana dashboard
// (docs/grafana/kmsd-dashboard.json) queries exists on a real kmsd, the process_* and
// kms_build_info families are there with plausible values, and benign return codes
// (CKR_BUFFER_TOO_SMALL) are not counted as token errors.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "kms/server/metrics.h"
#include "kmsd_fixture.h"
#include "kmsd_requests.h"

namespace kmstest {
namespace {

// Family names from "# TYPE name type" lines, plus the sample names of histograms.
std::set<std::string> families(const std::string& metrics) {
  std::set<std::string> names;
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream words(line.substr(7));
    std::string name, type;
    words >> name >> type;
    names.insert(name);
    if (type == "histogram") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(name + suffix);
    }
  }
  return names;
}

// The kms_* and process_* metric names an expression queries.
std::set<std::string> queried(const std::string& expr) {
  static const std::regex name(R"(\b((kms|process)_[a-zA-Z0-9_]+)\b)");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), name); it != std::sregex_iterator();
       ++it) {
    names.insert((*it)[1]);
  }
  return names;
}

class MetricsDashboardTest : public SharedKmsdTest<MetricsDashboardTest> {
 protected:
  static std::string metrics() {
    const auto response = ue_connection(*kmsd_, environment_->pki())->get("/metrics");
    EXPECT_EQ(response.status, 200u);
    return response.body;
  }
};

TEST_F(MetricsDashboardTest, EveryMetricTheDashboardQueriesExists) {
  std::ifstream file(std::string(KMS_SOURCE_DIR) + "/docs/grafana/kmsd-dashboard.json");
  ASSERT_TRUE(file) << "no dashboard";
  std::stringstream text;
  text << file.rdbuf();
  const boost::json::value dashboard = boost::json::parse(text.str());
  const std::set<std::string> exported = families(metrics());
  std::set<std::string> named;
  for (const auto& panel : dashboard.at("panels").as_array()) {
    const std::string title(panel.at("title").as_string());
    const auto& targets = panel.at("targets").as_array();
    ASSERT_FALSE(targets.empty()) << title;
    for (const auto& target : targets) {
      const std::string expr(target.at("expr").as_string());
      const auto names = queried(expr);
      EXPECT_FALSE(names.empty()) << title << ": " << expr << " queries no kmsd metric";
      for (const auto& n : names) {
        EXPECT_TRUE(exported.count(n)) << title << ": " << n << " is not exported";
        named.insert(n);
      }
    }
  }
  // What an operator must see: outcomes, latency, token errors and latency, readiness.
  for (const char* must : {"kms_http_requests_total", "kms_http_request_duration_seconds_bucket",
                           "kms_pkcs11_errors_total", "kms_pkcs11_call_duration_seconds_bucket",
                           "kms_token_down", "process_resident_memory_bytes"}) {
    EXPECT_TRUE(named.count(must)) << "the dashboard does not show " << must;
  }
}

TEST_F(MetricsDashboardTest, ProcessAndBuildFamiliesHavePlausibleValues) {
  const std::string body = metrics();
  EXPECT_GT(metric_value(body, "process_resident_memory_bytes").value_or(0), 1e6);
  EXPECT_GT(metric_value(body, "process_open_fds").value_or(0), 3);
  EXPECT_GE(metric_value(body, "process_max_fds").value_or(0),
            metric_value(body, "process_open_fds").value_or(1e9));
  EXPECT_TRUE(metric_value(body, "process_cpu_seconds_total").has_value());
  EXPECT_GT(metric_value(body, "process_start_time_seconds").value_or(0), 1.7e9);
  // The allocator kmsd runs on, as found in the process: the one the build configured.
  EXPECT_EQ(metric_value(body, "kms_build_info{version=\"" KMS_PROJECT_VERSION
                               "\",malloc=\"" KMS_MALLOC_NAME "\"}"),
            1.0)
      << body.substr(0, body.find('\n', body.find("kms_build_info{")));
  EXPECT_TRUE(metric_value(body, "kms_replay_capacity").has_value());
  EXPECT_TRUE(metric_value(body, "kms_group_commit_batches_total").has_value());
  EXPECT_TRUE(metric_value(body, "kms_key_cache_evictions_total").has_value());
}

TEST(Metrics, BenignReturnCodesAreNotTokenErrors) {
  kms::server::Metrics metrics;
  metrics.pkcs11_call("C_WrapKey", 0x150 /* CKR_BUFFER_TOO_SMALL */, std::chrono::microseconds(3));
  metrics.pkcs11_call("C_Login", 0x100 /* CKR_USER_ALREADY_LOGGED_IN */,
                      std::chrono::microseconds(3));
  metrics.pkcs11_call("C_Decrypt", 0x30 /* CKR_DEVICE_ERROR */, std::chrono::microseconds(3));
  const std::string body = metrics.render();
  EXPECT_EQ(body.find("function=\"C_WrapKey\",rv="), std::string::npos) << body;
  EXPECT_EQ(body.find("function=\"C_Login\",rv="), std::string::npos) << body;
  EXPECT_NE(body.find("kms_pkcs11_errors_total{function=\"C_Decrypt\",rv="), std::string::npos)
      << body;
  EXPECT_EQ(metric_value(body, "kms_pkcs11_calls_total{function=\"C_WrapKey\"}"), 1.0);
}

}  // namespace
}  // namespace kmstest
