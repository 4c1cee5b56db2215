// kmsd's TOML configuration: the example validates, every problem is named, and
// `kmsd --check-config` explains and exits non-zero.
#include "kms/server/config.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "test_token.h"

namespace {

namespace fs = std::filesystem;
using kms::server::load_config;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testsupport::TempDir>("kmsd-config");
    fs::create_directories(path("pki"));
    fs::create_directories(path("token"));
    // Real PEM files: the checker parses them.
    const auto result = testsupport::run_command(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=test", "-keyout", path("pki/server.key"), "-out",
         path("pki/server.crt")});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    fs::copy_file(path("pki/server.crt"), path("pki/bridge-ca.crt"));
    testsupport::write_private_file(path("token/user.pin"), "1234\n");
  }
  std::string path(const std::string& name) const { return dir_->path() + "/" + name; }
  std::string write(const std::string& text) const {
    std::ofstream(path("kmsd.toml")) << text;
    return path("kmsd.toml");
  }
  static std::string example() {
    std::ifstream in(KMS_EXAMPLE_CONFIG);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static std::string joined(const std::vector<std::string>& problems) {
    std::string out;
    for (const auto& p : problems) out += p + "\n";
    return out;
  }
  std::unique_ptr<testsupport::TempDir> dir_;
};

TEST_F(ConfigTest, ExampleConfigurationIsValidAndResolvesPathsAgainstItsFolder) {
  const auto loaded = load_config(write(example()));
  ASSERT_TRUE(loaded.ok()) << joined(loaded.problems);
  const auto& c = loaded.config;
  EXPECT_EQ(c.server.listen_address, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8443);
  EXPECT_EQ(c.server.tls_cert, fs::path(path("pki/server.crt")));
  EXPECT_EQ(c.audit.path, fs::path(path("audit.log")));
  EXPECT_EQ(c.token.database, path("kms.db"));
  EXPECT_EQ(c.limits.max_body_bytes, 16384u);
  EXPECT_EQ(c.protocol.freshness_window.count(), 300);
}

TEST_F(ConfigTest, EveryProblemIsNamed) {
  std::string text = example();
  const auto replace = [&text](const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  };
  replace("listen = \"127.0.0.1:8443\"", "listen = \"localhost\"");
  replace("tls_min_version = \"1.3\"", "tls_min_version = \"1.1\"");
  replace("max_connections = 1024", "max_connections = -5");
  replace("level = \"info\"", "level = \"loud\"");
  text += "\n[server2]\nx = 1\n";
  replace("[limits]\n", "[limits]\nmax_bodybytes = 10\n");
  const auto loaded = load_config(write(text));
  const std::string problems = joined(loaded.problems);
  EXPECT_NE(problems.find("server.listen"), std::string::npos) << problems;
  EXPECT_NE(problems.find("server.tls_min_version"), std::string::npos) << problems;
  EXPECT_NE(problems.find("limits.max_connections"), std::string::npos) << problems;
  EXPECT_NE(problems.find("log.level"), std::string::npos) << problems;
  EXPECT_NE(problems.find("server2"), std::string::npos) << problems;
  EXPECT_NE(problems.find("max_bodybytes"), std::string::npos) << problems;
}

TEST_F(ConfigTest, MissingFilesAndSyntaxErrorsAreExplained) {
  fs::remove(path("pki/server.key"));
  auto loaded = load_config(write(example()));
  EXPECT_NE(joined(loaded.problems).find("server.tls_key"), std::string::npos);
  loaded = load_config(write("[server\nlisten ="));
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.problems[0].find("TOML syntax error"), std::string::npos);
}

TEST_F(ConfigTest, CheckConfigCommandExplainsAndFails) {
  auto result = testsupport::run_command({KMSD_BIN, "--check-config", write(example())});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("configuration OK"), std::string::npos) << result.out;
  std::string text = example();
  text.replace(text.find("max_body_bytes = 16384"), 22, "max_body_bytes = \"big\"");
  result = testsupport::run_command({KMSD_BIN, "--check-config", write(text)});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("limits.max_body_bytes must be an integer"), std::string::npos)
      << result.err;
}

// One numeric setting as docs/SERVER.md's configuration reference documents it.
struct DocumentedRange {
  std::string table, key;
  std::int64_t min = 0;
  std::optional<std::int64_t> max;  // nullopt: "no upper bound"
};

std::vector<DocumentedRange> documented_ranges() {
  std::ifstream in(KMS_SOURCE_DIR "/docs/SERVER.md");
  const std::string doc(std::istreambuf_iterator<char>(in), {});
  const auto at = doc.find("\n## Configuration reference\n");
  EXPECT_NE(at, std::string::npos);
  const std::string section = doc.substr(at, doc.find("\n## ", at + 1) - at);
  // | `table.key` | default | MIN .. MAX | meaning |
  const std::regex row(
      R"(\n\| `([a-z_]+)\.([a-z_]+)` \| [^|\n]* \| (-?[0-9]+) \.\. ([0-9]+|no upper bound) \|)");
  std::vector<DocumentedRange> ranges;
  for (std::sregex_iterator m(section.begin(), section.end(), row), end; m != end; ++m) {
    DocumentedRange range{(*m)[1], (*m)[2], std::stoll((*m)[3]), std::nullopt};
    if ((*m)[4] != "no upper bound") range.max = std::stoll((*m)[4]);
    ranges.push_back(range);
  }
  return ranges;
}

// `text` with table.key set to `value` (the line replaced, or added under the header).
std::string with_setting(std::string text, const std::string& table, const std::string& key,
                         const std::string& value) {
  const std::string header = "\n[" + table + "]\n";
  const auto section = text.find(header);
  if (section == std::string::npos) return text + header + key + " = " + value + "\n";
  const auto body = section + header.size();
  const auto next = std::min(text.find("\n[", body), text.size());
  const std::regex line("(^|\n)" + key + " = [^\n]*");
  std::smatch m;
  const std::string part = text.substr(body - 1, next - body + 1);
  if (std::regex_search(part, m, line)) {
    const auto start = body - 1 + static_cast<std::size_t>(m.position(0)) + m[1].length();
    const auto length = static_cast<std::size_t>(m.length(0) - m[1].length());
    return text.replace(start, length, key + " = " + value);
  }
  return text.insert(body, key + " = " + value + "\n");
}

// docs/SERVER.md "Configuration reference": the documented range of every numeric setting is
// the one kmsd --check-config enforces, both ends included, and every integer setting of the
// example configuration has a documented range.
TEST_F(ConfigTest, DocumentedRangesAreTheEnforcedOnes) {
  const std::vector<DocumentedRange> ranges = documented_ranges();
  ASSERT_GE(ranges.size(), 15u) << "the range column of docs/SERVER.md was not found";
  std::set<std::string> documented;
  for (const auto& r : ranges) documented.insert(r.table + "." + r.key);
  {
    std::istringstream example_lines(example());
    std::string table;
    const std::regex integer_line(R"(^([a-z_]+) = -?[0-9]+\b)");
    for (std::string line; std::getline(example_lines, line);) {
      if (line.rfind("[", 0) == 0) table = line.substr(1, line.find(']') - 1);
      std::smatch m;
      if (std::regex_search(line, m, integer_line)) {
        EXPECT_TRUE(documented.contains(table + "." + m[1].str()))
            << table << "." << m[1] << " has no documented range";
      }
    }
  }
  const auto check = [&](const DocumentedRange& r, std::int64_t value, bool valid) {
    const std::string text = with_setting(example(), r.table, r.key, std::to_string(value));
    const auto result = testsupport::run_command({KMSD_BIN, "--check-config", write(text)});
    const std::string name = r.table + "." + r.key + " = " + std::to_string(value);
    if (valid) {
      EXPECT_EQ(result.exit_code, 0) << name << " refused:\n" << result.err;
    } else {
      EXPECT_EQ(result.exit_code, 1) << name << " accepted:\n" << result.out;
      EXPECT_NE(result.err.find(r.key), std::string::npos) << name << ":\n" << result.err;
    }
  };
  for (const DocumentedRange& r : ranges) {
    SCOPED_TRACE(r.table + "." + r.key);
    check(r, r.min, true);
    check(r, r.min - 1, false);
    if (r.max) {
      check(r, *r.max, true);
      check(r, *r.max + 1, false);
    } else {
      check(r, std::int64_t{1} << 62, true);
    }
  }
  // A number of another TOML type is not converted.
  for (const std::string bad : {"1e3", "300.0", "\"300\""}) {
    const std::string text = with_setting(example(), "protocol", "freshness_window_s", bad);
    const auto result = testsupport::run_command({KMSD_BIN, "--check-config", write(text)});
    EXPECT_EQ(result.exit_code, 1) << bad;
    EXPECT_NE(result.err.find("protocol.freshness_window_s must be an integer"), std::string::npos)
        << bad << ": " << result.err;
  }
}

// The command-line overrides of two of those settings obey the same ranges.
TEST_F(ConfigTest, ThreadOverridesOnTheCommandLineAreRangeChecked) {
  // A module that does not exist: a configuration that passes makes kmsd fail to start
  // (exit 2) at once, never serve.
  const std::string file =
      write(with_setting(example(), "token", "module", "\"/nonexistent/libpkcs11.so\""));
  for (const auto& [option, max] : std::vector<std::pair<std::string, int>>{
           {"--worker-threads", 1024}, {"--io-threads", 256}}) {
    auto result =
        testsupport::run_command({KMSD_BIN, "--config", file, option, std::to_string(max + 1)});
    EXPECT_EQ(result.exit_code, 1) << option << "\n" << result.err;
    EXPECT_NE(result.err.find(option + " " + std::to_string(max + 1) + " is out of range"),
              std::string::npos)
        << result.err;
    result = testsupport::run_command({KMSD_BIN, "--config", file, option, std::to_string(max)});
    EXPECT_EQ(result.exit_code, 2) << option << "\n" << result.err;  // valid, no token
    EXPECT_EQ(result.err.find("out of range"), std::string::npos) << result.err;
  }
}

}  // namespace
