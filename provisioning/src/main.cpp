// kms-provision: the operator CLI. Initialises the KMS keys in the token, adds, imports,
// lists, rotates and revokes subscribers and bridges. PINs come from a file, an
// environment variable or the URI's pin-source, never from the command line.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "bulk_file.h"
#include "encoding.h"
#include "exit_codes.h"
#include "hsm/error.h"
#include "kms/version.h"
#include "provisioner.h"
#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "tokens/key_database.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace provisioning {
namespace {

namespace json = boost::json;
using tokens::IdentityKind;

struct GlobalOptions {
  std::optional<std::string> config_file, module, init_reserved, token_uri, pin_file, pin_env,
      database, profile, key_store;
  bool json = false;
};

struct KeyOptions {  // add / rotate / import
  std::string identity;
  bool generate = false;
  std::optional<std::string> personalisation_key;
  bool insecure_plaintext = false;
  std::optional<std::string> out;
  std::optional<std::string> wrapped_file, wrapped_hex;
  std::optional<std::string> bulk_file, bulk_format;
  std::size_t batch_size = 500;
  std::optional<std::string> status_filter;
};

std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

std::string timestamp(std::int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

json::object record_json(const tokens::IdentityRecord& record) {
  return json::object{{"identity", record.identity},
                      {"kind", std::string(tokens::kind_name(record.kind))},
                      {"status", std::string(tokens::status_name(record.status))},
                      {"key_version", record.key_version},
                      {"store", std::string(tokens::key_store_mode_name(record.mode))},
                      {"created_at", timestamp(record.created_at)},
                      {"updated_at", timestamp(record.updated_at)}};
}

// Command state shared by the handlers: the configuration and lazily opened resources.
class Context {
 public:
  explicit Context(const GlobalOptions& options) : options_(options) {}

  const tokens::TokenConfig& config() {
    if (!config_) {
      tokens::TokenConfig config = tokens::load_token_config(
          options_.config_file ? std::optional<std::filesystem::path>(*options_.config_file)
                               : std::nullopt);
      if (options_.module) config.module = *options_.module;
      if (options_.init_reserved) config.init_reserved = *options_.init_reserved;
      if (options_.token_uri) config.uri = *options_.token_uri;
      if (options_.pin_file) {
        config.pin_file = *options_.pin_file;
        config.pin_env.reset();
      }
      if (options_.pin_env) {
        config.pin_env = *options_.pin_env;
        if (!options_.pin_file) config.pin_file.reset();
      }
      if (options_.database) config.database = *options_.database;
      if (options_.profile) config.profile = *options_.profile;
      if (options_.key_store) {
        auto mode = tokens::parse_key_store_mode(*options_.key_store);
        if (!mode) throw tokens::ConfigError("--key-store must be wrapped or token");
        config.key_store = *mode;
      }
      config.max_sessions = 2;            // one command at a time
      config.read_only_sessions = false;  // it creates and destroys token objects
      config.validate();
      config_ = std::move(config);
    }
    return *config_;
  }

  tokens::TokenContext& token() {
    if (!token_) {
      token_ = tokens::TokenContext::open(config());
      for (const std::string& warning : token_->warnings()) {
        std::cerr << "kms-provision: warning: " << warning << "\n";
      }
    }
    return *token_;
  }

  tokens::KeyDatabase& database() {
    if (!database_) {
      database_ = std::make_unique<tokens::KeyDatabase>(config().database);
      for (const std::string& warning : database_->warnings()) {
        std::cerr << "kms-provision: WARNING: " << warning << "\n";
      }
    }
    return *database_;
  }

  Provisioner provisioner(bool with_database) {
    return Provisioner([this]() -> tokens::TokenContext& { return token(); },
                       with_database ? &database() : nullptr, config().key_store);
  }

  bool json() const { return options_.json; }

  void print(const json::value& value, const std::string& human) {
    if (options_.json) {
      std::cout << json::serialize(value) << "\n";
    } else if (!human.empty()) {
      std::cout << human;
    }
  }

 private:
  const GlobalOptions& options_;
  std::optional<tokens::TokenConfig> config_;
  std::unique_ptr<tokens::TokenContext> token_;
  std::unique_ptr<tokens::KeyDatabase> database_;
};

hsm::Bytes wrapped_input(const KeyOptions& options) {
  std::optional<hsm::Bytes> blob;
  if (options.wrapped_file) {
    // Hex or base64 text, or the raw RFC 5649 output (e.g. of openssl enc -id-aes256-wrap-pad).
    const std::string content = read_text_file(*options.wrapped_file);
    blob = decode_blob(content);
    if (!blob) blob = hsm::Bytes(content.begin(), content.end());
  } else if (options.wrapped_hex) {
    blob = from_hex(*options.wrapped_hex);
    if (!blob) throw CliError(kBadKeyMaterial, "--wrapped-hex: not hex");
  } else {
    throw CliError(kUsage, "give the wrapped key with --wrapped FILE or --wrapped-hex HEX");
  }
  return *blob;
}

ExportOptions export_options(const KeyOptions& options) {
  if (options.insecure_plaintext == options.personalisation_key.has_value()) {
    throw CliError(kUsage,
                   "give exactly one of --personalisation-key NAME or "
                   "--insecure-plaintext-export");
  }
  if (!options.out) throw CliError(kUsage, "--out FILE is required (\"-\" for stdout)");
  return ExportOptions{options.personalisation_key, options.insecure_plaintext, *options.out};
}

void warn_if_plaintext(const ExportOptions& exported) {
  if (exported.insecure_plaintext) {
    std::cerr << "kms-provision: WARNING: --insecure-plaintext-export wrote the root key in "
                 "plaintext to "
              << exported.out_path << "; for tests and demos only\n";
  }
}

int run_init(Context& context, bool force, const std::optional<std::string>& transport_file) {
  Provisioner provisioner = context.provisioner(false);
  const InitResult result = provisioner.init(InitOptions{force, transport_file});
  const tokens::TokenProfile& profile = context.token().profile();
  json::object out{{"token", context.token().token().label},
                   {"profile", profile.name},
                   {"profile_id", profile.wire_id()},
                   {"wrap_mechanism", hsm::mechanism_name(profile.wrap_mechanism)},
                   {"transport_key_imported", result.transport_key_imported}};
  auto labels = [](const std::vector<std::string>& items) {
    json::array array;
    for (const auto& item : items) array.emplace_back(item);
    return array;
  };
  out["created"] = labels(result.created);
  out["present"] = labels(result.present);
  out["replaced"] = labels(result.replaced);
  if (!result.note.empty()) out["note"] = result.note;
  std::string human = "token " + context.token().token().label + ", profile " + profile.name +
                      " (" + hsm::mechanism_name(profile.wrap_mechanism) + ")\n";
  for (const auto& label : result.created) human += "created  " + label + "\n";
  for (const auto& label : result.replaced) human += "replaced " + label + "\n";
  for (const auto& label : result.present) human += "present  " + label + " (checked)\n";
  if (result.created.empty() && result.replaced.empty()) human += "already initialised\n";
  if (!result.note.empty()) human += "note: " + result.note + "\n";
  context.print(out, human);
  return kOk;
}

// db migrate: creates or upgrades every table (docs/OPERATIONS.md "The database"), without
// the token. SQLite files are migrated when opened anyway; a PostgreSQL database opened by
// kmsd with migrate=check needs this first.
int run_db_migrate(Context& context) {
  const std::string& database = context.config().database;
  std::vector<std::string> lines;
  try {
    const storage::DatabaseUrl url = storage::DatabaseUrl::parse(database);
    if (url.backend == storage::Backend::sqlite) {
      (void)tokens::prepare_database_file(url.sqlite_path);  // a new file: owner-only
    }
    lines = storage::migrate_database(url);
  } catch (const storage::Error& error) {
    throw tokens::DatabaseError(error.what());
  }
  json::array components;
  std::string human;
  for (const std::string& line : lines) {
    components.emplace_back(line);
    human += line + "\n";
  }
  context.print(json::object{{"migrated", std::move(components)}}, human);
  return 0;
}

int run_status(Context& context) {
  tokens::TokenContext& token = context.token();
  Provisioner provisioner = context.provisioner(false);
  const auto checks = provisioner.kms_keys();
  const auto missing = token.missing_kms_keys();
  json::object out{{"module", token.module()->description()},
                   {"token", token.token().label},
                   {"profile", token.profile().name},
                   {"profile_id", token.profile().wire_id()},
                   {"wrap_mechanism", hsm::mechanism_name(token.profile().wrap_mechanism)},
                   {"initialised", missing.empty()}};
  json::array keys;
  std::string human = "module   " + token.module()->description() + "\ntoken    " +
                      token.token().label + "\nprofile  " + token.profile().name + " (id " +
                      std::to_string(token.profile().wire_id()) + ", wrap " +
                      hsm::mechanism_name(token.profile().wrap_mechanism) + ")\n";
  for (const auto& check : checks) {
    keys.emplace_back(json::object{{"label", check.label},
                                   {"sensitive", check.sensitive},
                                   {"extractable", check.extractable},
                                   {"derive", check.derive},
                                   {"wrap", check.wrap},
                                   {"unwrap", check.unwrap},
                                   {"modifiable", check.modifiable}});
    human += "key      " + check.label + (check.sensitive ? " sensitive" : " NOT-SENSITIVE") +
             (check.extractable ? " extractable" : "") + (check.derive ? " derive" : "") +
             (check.wrap ? " wrap" : "") + (check.unwrap ? " unwrap" : "") +
             (check.modifiable ? " MODIFIABLE" : "") + "\n";
  }
  for (const auto& label : missing) human += "missing  " + label + "\n";
  out["keys"] = std::move(keys);
  context.print(out, human);
  return missing.empty() ? kOk : kNotInitialised;
}

int run_personalisation_import(Context& context, const std::string& label,
                               const KeyOptions& options) {
  const hsm::Bytes wrapped = wrapped_input(options);
  context.provisioner(false).import_personalisation_key(label, wrapped);
  context.print(json::object{{"personalisation_key", label}, {"imported", true}},
                "imported personalisation key " + label + "\n");
  return kOk;
}

int run_personalisation_list(Context& context) {
  const auto names = context.provisioner(false).personalisation_keys();
  json::array array;
  std::string human;
  for (const auto& name : names) {
    array.emplace_back(name);
    human += name + "\n";
  }
  context.print(array, human);
  return kOk;
}

int run_add(Context& context, IdentityKind kind, const KeyOptions& options) {
  require_ims_identity(options.identity);
  const ExportOptions exported = export_options(options);
  context.provisioner(true).add_generated(kind, options.identity, exported);
  warn_if_plaintext(exported);
  const auto record = context.database().find(kind, options.identity);
  json::object out = record_json(*record);
  out["export"] = exported.insecure_plaintext ? "plaintext" : "personalisation-wrapped";
  out["out"] = exported.out_path;
  context.print(out, exported.out_path == "-"
                         ? ""
                         : "added " + std::string(tokens::kind_name(kind)) + " " +
                               options.identity + " (key v1, " +
                               std::string(tokens::key_store_mode_name(record->mode)) +
                               "), export written to " + exported.out_path + "\n");
  return kOk;
}

int run_import(Context& context, IdentityKind kind, const KeyOptions& options) {
  if (options.bulk_file) {
    if (!options.identity.empty() || options.wrapped_file || options.wrapped_hex) {
      throw CliError(kUsage, "--file imports in bulk: give no ID or --wrapped");
    }
    const BulkFile file = parse_bulk_file(*options.bulk_file, options.bulk_format);
    const ImportResult result =
        context.provisioner(true).import_bulk(kind, file, options.batch_size);
    json::array failed;
    for (const auto& problem : result.failed) {
      failed.emplace_back(json::object{{result.unit, problem.number},
                                       {"identity", problem.identity},
                                       {"reason", problem.reason}});
      std::cerr << *options.bulk_file << ": " << result.unit << " " << problem.number << ": "
                << one_line(problem.reason) << "\n";
    }
    context.print(json::object{{"imported", result.imported}, {"failed", std::move(failed)}},
                  "imported " + std::to_string(result.imported) + " " +
                      std::string(tokens::kind_name(kind)) + "s, " +
                      std::to_string(result.failed.size()) + " failed\n");
    return result.failed.empty() ? kOk : kPartialImport;
  }
  if (options.identity.empty()) throw CliError(kUsage, "give an ID, or --file for bulk import");
  require_ims_identity(options.identity);
  const hsm::Bytes wrapped = wrapped_input(options);
  context.provisioner(true).import_wrapped(kind, options.identity, wrapped);
  const auto record = context.database().find(kind, options.identity);
  context.print(record_json(*record),
                "imported " + std::string(tokens::kind_name(kind)) + " " + options.identity + "\n");
  return kOk;
}

int run_list(Context& context, IdentityKind kind, const KeyOptions& options) {
  std::optional<tokens::KeyStatus> status;
  if (options.status_filter) {
    if (*options.status_filter == "active") {
      status = tokens::KeyStatus::active;
    } else if (*options.status_filter == "revoked") {
      status = tokens::KeyStatus::revoked;
    } else {
      throw CliError(kUsage, "--status must be active or revoked");
    }
  }
  json::array array;
  std::string human;
  for (const auto& record : context.database().list(kind)) {
    if (status && record.status != *status) continue;
    array.emplace_back(record_json(record));
    human += record.identity + "  " + std::string(tokens::status_name(record.status)) + "  v" +
             std::to_string(record.key_version) + "  " +
             std::string(tokens::key_store_mode_name(record.mode)) + "  " +
             timestamp(record.updated_at) + "\n";
  }
  context.print(array, human);
  return kOk;
}

int run_show(Context& context, IdentityKind kind, const KeyOptions& options) {
  const auto record = context.provisioner(true).show(kind, options.identity);
  context.print(
      record_json(record),
      "identity    " + record.identity + "\nkind        " + std::string(tokens::kind_name(kind)) +
          "\nstatus      " + std::string(tokens::status_name(record.status)) + "\nkey version " +
          std::to_string(record.key_version) + "\nstore       " +
          std::string(tokens::key_store_mode_name(record.mode)) + "\ncreated     " +
          timestamp(record.created_at) + "\nupdated     " + timestamp(record.updated_at) + "\n");
  return kOk;
}

int run_revoke(Context& context, IdentityKind kind, const KeyOptions& options) {
  context.provisioner(true).revoke(kind, options.identity);
  const auto record = context.database().find(kind, options.identity);
  context.print(record_json(*record),
                "revoked " + std::string(tokens::kind_name(kind)) + " " + options.identity + "\n");
  return kOk;
}

int run_rotate(Context& context, IdentityKind kind, const KeyOptions& options) {
  require_ims_identity(options.identity);
  std::optional<hsm::Bytes> wrapped;
  ExportOptions exported;
  if (options.wrapped_file || options.wrapped_hex) {
    if (options.personalisation_key || options.insecure_plaintext || options.out) {
      throw CliError(kUsage, "--wrapped imports the new key: no export options with it");
    }
    wrapped = wrapped_input(options);
  } else {
    exported = export_options(options);
  }
  const std::uint32_t version =
      context.provisioner(true).rotate(kind, options.identity, exported, wrapped);
  warn_if_plaintext(exported);
  const auto record = context.database().find(kind, options.identity);
  // With --out - stdout carries the export only (as for add).
  context.print(record_json(*record), exported.out_path == "-"
                                          ? ""
                                          : "rotated " + std::string(tokens::kind_name(kind)) +
                                                " " + options.identity + " to key v" +
                                                std::to_string(version) + "\n");
  return kOk;
}

// PKCS#11 failures, classified for the exit code.
ExitCode classify(const hsm::Error& error) {
  switch (error.kind()) {
    case hsm::ErrorKind::pkcs11:
    case hsm::ErrorKind::not_logged_in:
    case hsm::ErrorKind::pool_exhausted:
    case hsm::ErrorKind::software:
    case hsm::ErrorKind::not_unique:
      break;
    case hsm::ErrorKind::pin_unavailable:
    case hsm::ErrorKind::invalid_argument:
      return kConfigError;
    case hsm::ErrorKind::not_found:
      return error.function() == "pkcs11 URI" || error.function() == "Module::load" ? kTokenNotFound
                                                                                    : kTokenError;
    case hsm::ErrorKind::module_load:
      return kTokenNotFound;
  }
  if (error.function() == "pkcs11 URI") return kConfigError;  // several tokens match
  switch (error.rv()) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LEN_RANGE:
    case CKR_USER_PIN_NOT_INITIALIZED:
      return kLoginFailed;
    case CKR_PIN_INVALID:
      return kLoginFailed;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_DEVICE_REMOVED:
      return kTokenNotFound;
    default:
      break;
  }
  const std::string& function = error.function();
  if (function == "C_Initialize" || function == "C_GetFunctionList") {
    return kTokenNotFound;
  }
  return kTokenError;
}

void add_key_commands(CLI::App& app, IdentityKind kind, Context& context, KeyOptions& options,
                      std::function<int()>& action) {
  const std::string noun(tokens::kind_name(kind));
  auto* group = app.add_subcommand(noun, "Manage " + noun + "s");
  group->require_subcommand(1);

  auto add_export = [&](CLI::App* command) {
    command->add_option("--personalisation-key", options.personalisation_key,
                        "Wrap the new key (RFC 5649) for personalisation under this "
                        "personalisation key (see personalisation-key import)");
    command->add_flag("--insecure-plaintext-export", options.insecure_plaintext,
                      "Write the new key in plaintext hex (tests and demos only)");
    command->add_option("--out", options.out,
                        "File for the exported key (created 0600, never overwritten; - for "
                        "stdout)");
  };
  auto add_wrapped = [&](CLI::App* command) {
    command->add_option("--wrapped", options.wrapped_file,
                        "File with the key wrapped (RFC 5649) under the transport key, hex or "
                        "base64");
    command->add_option("--wrapped-hex", options.wrapped_hex, "The same, as a hex argument");
  };

  auto* add = group->add_subcommand("add", "Generate a new " + noun +
                                               " root key in the token, store it and export "
                                               "it for personalisation");
  add->add_option("ID", options.identity, "IMS public identity (sip:, sips:, tel:)")->required();
  add->add_flag("--generate", options.generate, "Generate the key in the token (the default)");
  add_export(add);
  add->callback([&, kind] { action = [&, kind] { return run_add(context, kind, options); }; });

  auto* import = group->add_subcommand(
      "import", "Import " + noun +
                    " keys wrapped under the transport key: one (ID --wrapped) "
                    "or in bulk (--file)");
  import->add_option("ID", options.identity, "IMS public identity (single import)");
  add_wrapped(import);
  import->add_option("--file", options.bulk_file,
                     "Bulk file: CSV (identity,wrapped_key) or JSON ([{identity, "
                     "wrapped_key}] or JSON Lines)");
  import->add_option("--format", options.bulk_format, "csv or json (default: from extension)");
  import->add_option("--batch-size", options.batch_size, "Lines per database transaction")
      ->check(CLI::Range(1, 100000));
  import->callback(
      [&, kind] { action = [&, kind] { return run_import(context, kind, options);
};
}  // namespace
);

auto* list = group->add_subcommand("list", "List " + noun + "s");
list->add_option("--status", options.status_filter, "active or revoked");
list->callback([&, kind] { action = [&, kind] { return run_list(context, kind, options); }; });

auto* show = group->add_subcommand("show", "Show one " + noun);
show->add_option("ID", options.identity, "IMS public identity")->required();
show->callback([&, kind] { action = [&, kind] { return run_show(context, kind, options); }; });

auto* revoke = group->add_subcommand("revoke", "Revoke a " + noun + ": it no longer resolves");
revoke->add_option("ID", options.identity, "IMS public identity")->required();
revoke->callback([&, kind] { action = [&, kind] { return run_revoke(context, kind, options); }; });

auto* rotate =
    group->add_subcommand("rotate", "Give a " + noun +
                                        " a new key version: generated (export options as for add) "
                                        "or imported (--wrapped)");
rotate->add_option("ID", options.identity, "IMS public identity")->required();
add_export(rotate);
add_wrapped(rotate);
rotate->callback([&, kind] { action = [&, kind] { return run_rotate(context, kind, options); }; });
}  // namespace provisioning

int run(int argc, char** argv) {
  GlobalOptions globals;
  KeyOptions options;
  Context context(globals);
  std::function<int()> action;

  CLI::App app{
      "kms-provision: put the KMS keys, subscribers and bridges into the token and "
      "the KMS database. The PIN comes from --pin-file, --pin-env (the name of an "
      "environment variable) or pin-source in the token URI.",
      "kms-provision"};
  app.set_help_all_flag("--help-all", "Show help for every command");
  app.set_version_flag("--version", "kms-provision " KMS_VERSION);
  app.fallthrough();
  app.require_subcommand(1);
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
                 "Token profile: " + tokens::requestable_profile_names());
  app.add_option("--key-store", globals.key_store,
                 "Where new root keys go: wrapped (database, default) or token");
  app.add_flag("--json", globals.json, "Machine-readable output");

  bool force = false;
  std::optional<std::string> transport_key_file;
  auto* init =
      app.add_subcommand("init",
                         "Create the master derivation, storage and transport keys in the token "
                         "(idempotent: checks and keeps existing keys)");
  init->add_flag("--force", force,
                 "Replace existing KMS keys (invalidates every root key stored in the "
                 "database)");
  init->add_option("--transport-key-file", transport_key_file,
                   "Import this ceremony AES-256 transport key (32 raw bytes, hex or base64) "
                   "instead of generating one");
  init->callback([&] { action = [&] { return run_init(context, force, transport_key_file); }; });

  auto* db = app.add_subcommand("db", "The KMS database (SQLite file or PostgreSQL server)");
  db->require_subcommand(1);
  auto* migrate = db->add_subcommand(
      "migrate", "Create or upgrade the database's tables to this version (no token needed)");
  migrate->callback([&] { action = [&] { return run_db_migrate(context); }; });

  auto* status = app.add_subcommand("status", "Show the token, its profile and the KMS keys");
  status->callback([&] { action = [&] { return run_status(context); }; });

  std::string personalisation_label;
  auto* personalisation = app.add_subcommand("personalisation-key", "Manage personalisation keys");
  personalisation->require_subcommand(1);
  auto* p_import = personalisation->add_subcommand(
      "import", "Import a personalisation key wrapped (RFC 5649) under the transport key");
  p_import->add_option("--label", personalisation_label, "Name of the key")->required();
  p_import->add_option("--wrapped", options.wrapped_file, "File with the wrapped key");
  p_import->add_option("--wrapped-hex", options.wrapped_hex, "The wrapped key as hex");
  p_import->callback([&] {
    action = [&] { return run_personalisation_import(context, personalisation_label, options); };
  });
  auto* p_list = personalisation->add_subcommand("list", "List personalisation keys");
  p_list->callback([&] { action = [&] { return run_personalisation_list(context); }; });

  add_key_commands(app, IdentityKind::subscriber, context, options, action);
  add_key_commands(app, IdentityKind::bridge, context, options, action);

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
  } catch (const CliError& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return error.code();
  } catch (const tokens::ConfigError& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kConfigError;
  } catch (const tokens::MissingMechanismError& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kMissingMechanism;
  } catch (const tokens::NotInitialisedError& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kNotInitialised;
  } catch (const tokens::DuplicateIdentityError& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kAlreadyExists;
  } catch (const tokens::DatabaseError& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kDatabaseError;
  } catch (const hsm::Error& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return classify(error);
  } catch (const std::invalid_argument& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kConfigError;
  } catch (const std::exception& error) {
    std::cerr << "kms-provision: error: " << one_line(error.what()) << "\n";
    return kInternalError;
  }
}

}  // namespace
}  // namespace provisioning

int main(int argc, char** argv) { return provisioning::run(argc, argv); }
