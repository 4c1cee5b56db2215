// clone component / export / import: the key cloning ceremony (clone.h).
#include <memory>

#include "clone.h"
#include "commands.h"
#include "exit_codes.h"

namespace provisioning {
namespace {

namespace json = boost::json;

// The installed keys' check values into the database (kmsd's key check at start).
void print_result(Context& context, const CloneResult& result, const std::string& command,
                  const std::string& what) {
  json::array components;
  std::string human;
  for (std::size_t i = 0; i < result.component_kcvs.size(); ++i) {
    components.emplace_back(result.component_kcvs[i]);
    human += "component " + std::to_string(i + 1) + " kcv " + result.component_kcvs[i] + "\n";
  }
  human += "cloning key kcv " + result.cloning_key_kcv + "\n";
  json::array keys;
  for (const KeyCheckValue& key : result.keys) {
    keys.emplace_back(json::object{{"label", key.label}, {"kcv", key.kcv}});
    human += "installed " + key.label + " kcv " + key.kcv + "\n";
  }
  json::array replaced;
  for (const auto& label : result.replaced) {
    replaced.emplace_back(label);
    human += "replaced " + label + "\n";
  }
  if (!result.note.empty()) human += "note: " + result.note + "\n";
  std::vector<std::string> installed;
  for (const KeyCheckValue& key : result.keys) installed.push_back(key.label);
  KeyCheckReport checks = record_made_keys(context, command, installed);
  human += checks.human;
  human += what;
  context.print(json::object{{"token", context.token().token().label},
                             {"profile", context.token().profile().name},
                             {"component_kcvs", std::move(components)},
                             {"cloning_key_kcv", result.cloning_key_kcv},
                             {"keys", std::move(keys)},
                             {"replaced", std::move(replaced)},
                             {"note", result.note},
                             {"key_check", std::move(checks.json)}},
                human);
}

}  // namespace

void add_clone_commands(CLI::App& app, Context& context, Action& action) {
  auto* clone = app.add_subcommand(
      "clone",
      "Key cloning ceremony: the same KMS keys in several tokens, wrapped under a cloning "
      "key made of key components (docs/OPERATIONS.md)");
  clone->require_subcommand(1);

  auto component_out = std::make_shared<std::string>();
  auto* component = clone->add_subcommand(
      "component", "Generate a random key component for one custodian (no token needed)");
  component->add_option("--out", *component_out, "New file for the component (0600)")->required();
  on_run(component, action, [&context, component_out] {
    const std::string kcv = new_key_component(*component_out);
    context.print(json::object{{"out", *component_out}, {"kcv", kcv}},
                  "component written to " + *component_out + ", kcv " + kcv + "\n");
    return kOk;
  });

  auto export_options = std::make_shared<CloneExportOptions>();
  auto* exported = clone->add_subcommand(
      "export",
      "First token: create the KMS keys, write them wrapped under the cloning key to "
      "--out and install them in this token (not extractable)");
  exported
      ->add_option("--component", export_options->component_files,
                   "Key component file (64 hex digits), one per custodian, at least two")
      ->required();
  exported->add_option("--transport-key-file", export_options->transport_key_file,
                       "Use this ceremony AES-256 transport key instead of generating one");
  exported->add_option("--out", export_options->out_path, "New clone file (0600)")->required();
  exported->add_flag("--force", export_options->force,
                     "Replace existing KMS keys (invalidates every root key stored in the "
                     "database)");
  on_run(exported, action, [&context, export_options] {
    const CloneResult result = clone_export(context.token(), *export_options);
    print_result(context, result, "kms-provision clone export",
                 "clone file written to " + export_options->out_path + "\n");
    return kOk;
  });

  auto import_options = std::make_shared<CloneImportOptions>();
  auto* imported =
      clone->add_subcommand("import", "Every other token: install the KMS keys from a clone file");
  imported->add_option("FILE", import_options->clone_file, "Clone file from clone export")
      ->required();
  imported
      ->add_option("--component", import_options->component_files,
                   "Key component file, one per custodian (the same as for export)")
      ->required();
  imported->add_flag("--force", import_options->force,
                     "Replace existing KMS keys (invalidates every root key stored in the "
                     "database)");
  on_run(imported, action, [&context, import_options] {
    const CloneResult result = clone_import(context.token(), *import_options);
    print_result(context, result, "kms-provision clone import",
                 "installed the KMS keys of " + import_options->clone_file + "\n");
    return kOk;
  });
}

}  // namespace provisioning
