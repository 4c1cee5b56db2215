// What every kms-provision command shares: the global options, the configuration built from
// them, the token and database opened on first use, and the output (human or --json).
#pragma once

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "provisioner.h"
#include "tokens/key_database.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace provisioning {

struct GlobalOptions {
  std::optional<std::string> config_file, module, init_reserved, token_uri, pin_file, pin_env,
      database, profile, key_store;
  bool json = false;
};

class Context {
 public:
  explicit Context(const GlobalOptions& options) : options_(options) {}

  const tokens::TokenConfig& config();
  tokens::TokenContext& token();
  tokens::KeyDatabase& database();
  Provisioner provisioner(bool with_database);

  bool json() const { return options_.json; }
  // The JSON value with --json, else the human text (nothing when it is empty).
  void print(const boost::json::value& value, const std::string& human) const;

 private:
  const GlobalOptions& options_;
  std::optional<tokens::TokenConfig> config_;
  std::unique_ptr<tokens::TokenContext> token_;
  std::unique_ptr<tokens::KeyDatabase> database_;
};

// What a parsed command runs; returns the exit code. Commands set it from their CLI11
// callback, so exactly the command given on the command line runs.
using Action = std::function<int()>;

// Registers `command` to run `run` when it is the command given.
inline void on_run(CLI::App* command, Action& action, Action run) {
  command->callback([&action, run = std::move(run)] { action = run; });
}

std::string one_line(std::string text);
boost::json::object record_json(const tokens::IdentityRecord& record);

}  // namespace provisioning
