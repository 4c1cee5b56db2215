// init: the KMS keys into the token; status: the token, its profile and the KMS keys.
#include <memory>

#include "clone.h"
#include "commands.h"
#include "exit_codes.h"

namespace provisioning {
namespace {

namespace json = boost::json;

struct InitCommandOptions {
  bool force = false;
  std::optional<std::string> transport_key_file;
};

json::array labels_json(const std::vector<std::string>& items) {
  json::array array;
  for (const auto& item : items) array.emplace_back(item);
  return array;
}

int run_init(Context& context, const InitCommandOptions& options) {
  Provisioner provisioner = context.provisioner(false);
  const InitResult result =
      provisioner.init(InitOptions{options.force, options.transport_key_file});
  const tokens::TokenProfile& profile = context.token().profile();
  json::object out{{"token", context.token().token().label},
                   {"profile", profile.name},
                   {"profile_id", profile.wire_id()},
                   {"wrap_mechanism", hsm::mechanism_name(profile.wrap_mechanism)},
                   {"transport_key_imported", result.transport_key_imported}};
  out["created"] = labels_json(result.created);
  out["present"] = labels_json(result.present);
  out["replaced"] = labels_json(result.replaced);
  if (!result.note.empty()) out["note"] = result.note;
  std::string human = "token " + context.token().token().label + ", profile " + profile.name +
                      " (" + hsm::mechanism_name(profile.wrap_mechanism) + ")\n";
  for (const auto& label : result.created) human += "created  " + label + "\n";
  for (const auto& label : result.replaced) human += "replaced " + label + "\n";
  for (const auto& label : result.present) human += "present  " + label + " (checked)\n";
  if (result.created.empty() && result.replaced.empty()) human += "already initialised\n";
  if (!result.note.empty()) human += "note: " + result.note + "\n";
  // The new keys' check values into the database, for kmsd's key check at start.
  std::vector<std::string> made = result.created;
  made.insert(made.end(), result.replaced.begin(), result.replaced.end());
  KeyCheckReport checks = record_made_keys(
      context, options.force ? "kms-provision init --force" : "kms-provision init", made);
  out["key_check"] = std::move(checks.json);
  human += checks.human;
  context.print(out, human);
  return kOk;
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
  // Key check values, to compare the nodes of a deployment (docs/OPERATIONS.md).
  json::object kcvs;
  for (const KeyCheckValue& kcv : kms_key_check_values(token)) {
    if (!kcv.problem.empty()) {
      human += "kcv      " + kcv.label + " unavailable: " + one_line(kcv.problem) + "\n";
    }
    if (kcv.kcv.empty()) continue;
    kcvs[kcv.label] = kcv.kcv;
    human += "kcv      " + kcv.label + " " + kcv.kcv + "\n";
  }
  out["kcv"] = std::move(kcvs);
  out["keys"] = std::move(keys);
  context.print(out, human);
  return missing.empty() ? kOk : kNotInitialised;
}

}  // namespace

void add_init_status_commands(CLI::App& app, Context& context, Action& action) {
  auto options = std::make_shared<InitCommandOptions>();
  auto* init =
      app.add_subcommand("init",
                         "Create the master derivation, storage and transport keys in the token "
                         "(idempotent: checks and keeps existing keys)");
  init->add_flag("--force", options->force,
                 "Replace existing KMS keys (invalidates every root key stored in the "
                 "database)");
  init->add_option("--transport-key-file", options->transport_key_file,
                   "Import this ceremony AES-256 transport key (32 raw bytes, hex or base64) "
                   "instead of generating one");
  on_run(init, action, [&context, options] { return run_init(context, *options); });

  auto* status = app.add_subcommand("status", "Show the token, its profile and the KMS keys");
  on_run(status, action, [&context] { return run_status(context); });
}

}  // namespace provisioning
