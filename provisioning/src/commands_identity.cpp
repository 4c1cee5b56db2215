// subscriber / bridge: add, import, list, show, revoke, rotate (the bulk form of import is
// in commands_bulk_import.cpp).
#include <iostream>
#include <memory>

#include "commands.h"
#include "encoding.h"
#include "errors.h"
#include "exit_codes.h"
#include "tokens/unix_time.h"

namespace provisioning {
namespace {

namespace json = boost::json;
using tokens::IdentityKind;

struct ExportCommandOptions {  // add, generated rotate
  std::optional<std::string> personalisation_key;
  bool insecure_plaintext = false;
  std::optional<std::string> out;
  bool given() const { return personalisation_key || insecure_plaintext || out; }
};

struct AddOptions {
  std::string identity;
  ExportCommandOptions exported;
};

struct ImportOptions {
  std::string identity;
  WrappedKeyOptions wrapped;
  std::optional<std::string> bulk_file;
  BulkImportOptions bulk;
};

struct RotateOptions {
  std::string identity;
  ExportCommandOptions exported;
  WrappedKeyOptions wrapped;
};

struct ListOptions {
  std::optional<std::string> status;
};

ExportOptions export_options(const ExportCommandOptions& options) {
  if (options.insecure_plaintext == options.personalisation_key.has_value()) {
    throw UsageError(
        "give exactly one of --personalisation-key NAME or "
        "--insecure-plaintext-export");
  }
  if (!options.out) throw UsageError("--out FILE is required (\"-\" for stdout)");
  return ExportOptions{options.personalisation_key, options.insecure_plaintext, *options.out};
}

void warn_if_plaintext(const ExportOptions& exported) {
  if (exported.insecure_plaintext) {
    std::cerr << "kms-provision: WARNING: --insecure-plaintext-export wrote the root key in "
                 "plaintext to "
              << exported.out_path << "; for tests and demos only\n";
  }
}

std::string noun(IdentityKind kind) { return std::string(tokens::kind_name(kind)); }

int run_add(Context& context, IdentityKind kind, const AddOptions& options) {
  require_ims_identity(options.identity);
  const ExportOptions exported = export_options(options.exported);
  context.provisioner(true).add_generated(kind, options.identity, exported);
  warn_if_plaintext(exported);
  const auto record = context.database().find(kind, options.identity);
  json::object out = record_json(*record);
  out["export"] = exported.insecure_plaintext ? "plaintext" : "personalisation-wrapped";
  out["out"] = exported.out_path;
  context.print(out, exported.out_path == "-"
                         ? ""
                         : "added " + noun(kind) + " " + options.identity + " (key v1, " +
                               std::string(tokens::key_store_mode_name(record->mode)) +
                               "), export written to " + exported.out_path + "\n");
  return kOk;
}

int run_import(Context& context, IdentityKind kind, const ImportOptions& options) {
  if (options.bulk_file) {
    if (!options.identity.empty() || options.wrapped.given()) {
      throw UsageError("--file imports in bulk: give no ID or --wrapped");
    }
    BulkImportOptions bulk = options.bulk;
    bulk.file = *options.bulk_file;
    return run_bulk_import(context, kind, bulk);
  }
  if (options.identity.empty()) throw UsageError("give an ID, or --file for bulk import");
  if (options.bulk.skip_existing) throw UsageError("--skip-existing applies to --file only");
  require_ims_identity(options.identity);
  const hsm::Bytes wrapped = wrapped_input(options.wrapped);
  context.provisioner(true).import_wrapped(kind, options.identity, wrapped);
  const auto record = context.database().find(kind, options.identity);
  context.print(record_json(*record), "imported " + noun(kind) + " " + options.identity + "\n");
  return kOk;
}

int run_list(Context& context, IdentityKind kind, const ListOptions& options) {
  std::optional<tokens::KeyStatus> status;
  if (options.status) {
    if (*options.status == "active") {
      status = tokens::KeyStatus::active;
    } else if (*options.status == "revoked") {
      status = tokens::KeyStatus::revoked;
    } else {
      throw UsageError("--status must be active or revoked");
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
             tokens::utc_timestamp(record.updated_at) + "\n";
  }
  context.print(array, human);
  return kOk;
}

int run_show(Context& context, IdentityKind kind, const std::string& identity) {
  const auto record = context.provisioner(true).show(kind, identity);
  context.print(record_json(record),
                "identity    " + record.identity + "\nkind        " + noun(kind) +
                    "\nstatus      " + std::string(tokens::status_name(record.status)) +
                    "\nkey version " + std::to_string(record.key_version) + "\nstore       " +
                    std::string(tokens::key_store_mode_name(record.mode)) + "\ncreated     " +
                    tokens::utc_timestamp(record.created_at) + "\nupdated     " +
                    tokens::utc_timestamp(record.updated_at) + "\n");
  return kOk;
}

int run_revoke(Context& context, IdentityKind kind, const std::string& identity) {
  context.provisioner(true).revoke(kind, identity);
  const auto record = context.database().find(kind, identity);
  context.print(record_json(*record), "revoked " + noun(kind) + " " + identity + "\n");
  return kOk;
}

int run_rotate(Context& context, IdentityKind kind, const RotateOptions& options) {
  require_ims_identity(options.identity);
  std::optional<hsm::Bytes> wrapped;
  ExportOptions exported;
  if (options.wrapped.given()) {
    if (options.exported.given()) {
      throw UsageError("--wrapped imports the new key: no export options with it");
    }
    wrapped = wrapped_input(options.wrapped);
  } else {
    exported = export_options(options.exported);
  }
  const std::uint32_t version =
      context.provisioner(true).rotate(kind, options.identity, exported, wrapped);
  warn_if_plaintext(exported);
  const auto record = context.database().find(kind, options.identity);
  // With --out - stdout carries the export only (as for add).
  context.print(record_json(*record), exported.out_path == "-"
                                          ? ""
                                          : "rotated " + noun(kind) + " " + options.identity +
                                                " to key v" + std::to_string(version) + "\n");
  return kOk;
}

void add_export_options(CLI::App* command, ExportCommandOptions& options) {
  command->add_option("--personalisation-key", options.personalisation_key,
                      "Wrap the new key (RFC 5649) for personalisation under this "
                      "personalisation key (see personalisation-key import)");
  command->add_flag("--insecure-plaintext-export", options.insecure_plaintext,
                    "Write the new key in plaintext hex (tests and demos only)");
  command->add_option("--out", options.out,
                      "File for the exported key (created 0600, never overwritten; - for "
                      "stdout)");
}

const char* const kWrappedFileHelp =
    "File with the key wrapped (RFC 5649) under the transport key, hex or base64";
const char* const kWrappedHexHelp = "The same, as a hex argument";

}  // namespace

void add_wrapped_options(CLI::App* command, WrappedKeyOptions& options,
                         const std::string& file_help, const std::string& hex_help) {
  command->add_option("--wrapped", options.file, file_help);
  command->add_option("--wrapped-hex", options.hex, hex_help);
}

hsm::Bytes wrapped_input(const WrappedKeyOptions& options) {
  std::optional<hsm::Bytes> blob;
  if (options.file) {
    // Hex or base64 text, or the raw RFC 5649 output (e.g. of openssl enc -id-aes256-wrap-pad).
    const std::string content = read_text_file(*options.file);
    blob = decode_blob(content);
    if (!blob) blob = hsm::Bytes(content.begin(), content.end());
  } else if (options.hex) {
    blob = from_hex(*options.hex);
    if (!blob) throw BadKeyMaterialError("--wrapped-hex: not hex");
  } else {
    throw UsageError("give the wrapped key with --wrapped FILE or --wrapped-hex HEX");
  }
  return *blob;
}

void add_identity_commands(CLI::App& app, IdentityKind kind, Context& context, Action& action) {
  const std::string name = noun(kind);
  auto* group = app.add_subcommand(name, "Manage " + name + "s");
  group->require_subcommand(1);

  auto add_options = std::make_shared<AddOptions>();
  auto* add = group->add_subcommand("add", "Generate a new " + name +
                                               " root key in the token, store it and export "
                                               "it for personalisation");
  add->add_option("ID", add_options->identity, "IMS public identity (sip:, sips:, tel:)")
      ->required();
  add_export_options(add, add_options->exported);
  on_run(add, action,
         [&context, kind, add_options] { return run_add(context, kind, *add_options); });

  auto import_options = std::make_shared<ImportOptions>();
  auto* import = group->add_subcommand(
      "import", "Import " + name +
                    " keys wrapped under the transport key: one (ID --wrapped) "
                    "or in bulk (--file)");
  import->add_option("ID", import_options->identity, "IMS public identity (single import)");
  add_wrapped_options(import, import_options->wrapped, kWrappedFileHelp, kWrappedHexHelp);
  import->add_option("--file", import_options->bulk_file,
                     "Bulk file: CSV (identity,wrapped_key) or JSON ([{identity, "
                     "wrapped_key}] or JSON Lines)");
  import->add_option("--format", import_options->bulk.format,
                     "csv or json (default: from extension)");
  import
      ->add_option("--batch-size", import_options->bulk.batch_size,
                   "Lines per database transaction")
      ->check(CLI::Range(1, 100000));
  import->add_flag("--skip-existing", import_options->bulk.skip_existing,
                   "Skip identities already in the database instead of failing them (to run "
                   "a file again after an import that stopped part way)");
  on_run(import, action,
         [&context, kind, import_options] { return run_import(context, kind, *import_options); });

  auto list_options = std::make_shared<ListOptions>();
  auto* list = group->add_subcommand("list", "List " + name + "s");
  list->add_option("--status", list_options->status, "active or revoked");
  on_run(list, action,
         [&context, kind, list_options] { return run_list(context, kind, *list_options); });

  auto show_identity = std::make_shared<std::string>();
  auto* show = group->add_subcommand("show", "Show one " + name);
  show->add_option("ID", *show_identity, "IMS public identity")->required();
  on_run(show, action,
         [&context, kind, show_identity] { return run_show(context, kind, *show_identity); });

  auto revoke_identity = std::make_shared<std::string>();
  auto* revoke = group->add_subcommand("revoke", "Revoke a " + name + ": it no longer resolves");
  revoke->add_option("ID", *revoke_identity, "IMS public identity")->required();
  on_run(revoke, action,
         [&context, kind, revoke_identity] { return run_revoke(context, kind, *revoke_identity); });

  auto rotate_options = std::make_shared<RotateOptions>();
  auto* rotate = group->add_subcommand(
      "rotate", "Give a " + name +
                    " a new key version: generated (export options as for add) "
                    "or imported (--wrapped)");
  rotate->add_option("ID", rotate_options->identity, "IMS public identity")->required();
  add_export_options(rotate, rotate_options->exported);
  add_wrapped_options(rotate, rotate_options->wrapped, kWrappedFileHelp, kWrappedHexHelp);
  on_run(rotate, action,
         [&context, kind, rotate_options] { return run_rotate(context, kind, *rotate_options); });
}

}  // namespace provisioning
