// kms-provision: the operator CLI. Initialises the KMS keys in the token, adds, imports,
// lists, rotates and revokes subscribers and bridges. PINs come from a file, an
// environment variable or the URI's pin-source, never from the command line. The commands
// live in commands_*.cpp; this file parses the command line and turns failures into exit
// codes (exit_codes.h), in one place.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli_context.h"
#include "commands.h"
#include "exit_codes.h"
#include "kms/version.h"

namespace provisioning {
namespace {

void add_global_options(CLI::App& app, GlobalOptions& globals) {
  app.add_option("--config", globals.config_file,
                 "TOML configuration shared with kmsd ([token], [database])");
  app.add_option("--module", globals.module, "PKCS#11 module: a path or a p11-kit module name");
  app.add_option("--init-reserved", globals.init_reserved,
                 "C_Initialize pReserved string (NSS softoken's configdir=...)");
  app.add_option("--token-uri", globals.token_uri, "pkcs11: URI of the token");
  app.add_option("--pin-file", globals.pin_file, "File holding the user PIN (first line)");
  app.add_option("--pin-env", globals.pin_env, "Name of the environment variable with the PIN");
  app.add_option("--database", globals.database,
                 "KMS database: an SQLite file, sqlite:PATH or postgresql://... URL");
  app.add_option("--profile", globals.profile,
                 "Token profile: auto, aes-ecb-sha256, "
                 "sp800-108-cmac");
  app.add_option("--key-store", globals.key_store,
                 "Where new root keys go: wrapped (database, default) or token");
  app.add_flag("--json", globals.json, "Machine-readable output");
}

int run(int argc, char** argv) {
  GlobalOptions globals;
  Context context(globals);
  Action action;

  CLI::App app{
      "kms-provision: put the KMS keys, subscribers and bridges into the token and "
      "the KMS database. The PIN comes from --pin-file, --pin-env (the name of an "
      "environment variable) or pin-source in the token URI.",
      "kms-provision"};
  app.set_help_all_flag("--help-all", "Show help for every command");
  app.set_version_flag("--version", "kms-provision " KMS_VERSION);
  app.fallthrough();
  app.require_subcommand(1);
  add_global_options(app, globals);
  add_init_status_commands(app, context, action);
  add_db_commands(app, context, action);
  add_personalisation_commands(app, context, action);
  add_clone_commands(app, context, action);
  add_key_check_commands(app, context, action);
  add_identity_commands(app, tokens::IdentityKind::subscriber, context, action);
  add_identity_commands(app, tokens::IdentityKind::bridge, context, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "kms-provision: error: " << one_line(e.what()) << " (see --help)\n";
    return kUsage;
  }

  try {
    return action ? action() : kUsage;
  } catch (const std::exception& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return exit_code_of_current_exception();
  }
}

}  // namespace
}  // namespace provisioning

int main(int argc, char** argv) { return provisioning::run(argc, argv); }
