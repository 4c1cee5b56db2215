// kms-provision's command groups, one file each; each adds its subcommands to the app and
// sets `action` from their callbacks.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "cli_context.h"

namespace provisioning {

void add_init_status_commands(CLI::App& app, Context& context, Action& action);  // init, status
void add_personalisation_commands(CLI::App& app, Context& context,
                                  Action& action);  // personalisation-key
// db migrate: the database's schema, without the token.
void add_db_commands(CLI::App& app, Context& context, Action& action);
// clone component / export / import: the key cloning ceremony.
void add_clone_commands(CLI::App& app, Context& context, Action& action);
// key-check [--record]: the token's key check values against the database's.
void add_key_check_commands(CLI::App& app, Context& context, Action& action);
// After init / clone made keys (`made`: the labels created or replaced): their key check
// values recorded in the database, the kept keys' compared (tokens::record_key_checks).
struct KeyCheckReport {
  boost::json::array json;
  std::string human;
};
KeyCheckReport record_made_keys(Context& context, const std::string& command,
                                const std::vector<std::string>& made);
// subscriber / bridge: add, import (one, or in bulk), list, show, revoke, rotate.
void add_identity_commands(CLI::App& app, tokens::IdentityKind kind, Context& context,
                           Action& action);

// The bulk form of `import` (commands_bulk_import.cpp).
struct BulkImportOptions {
  std::string file;
  std::optional<std::string> format;
  std::size_t batch_size = 500;
  bool skip_existing = false;
};
int run_bulk_import(Context& context, tokens::IdentityKind kind, const BulkImportOptions& options);

// --wrapped FILE / --wrapped-hex HEX of import, rotate and personalisation-key import.
struct WrappedKeyOptions {
  std::optional<std::string> file, hex;
  bool given() const { return file || hex; }
};
void add_wrapped_options(CLI::App* command, WrappedKeyOptions& options,
                         const std::string& file_help, const std::string& hex_help);
hsm::Bytes wrapped_input(const WrappedKeyOptions& options);

}  // namespace provisioning
