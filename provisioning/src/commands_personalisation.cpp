// personalisation-key import / list: the keys new root keys are exported under.
#include <memory>

#include "commands.h"
#include "exit_codes.h"

namespace provisioning {
namespace {

namespace json = boost::json;

struct PersonalisationImportOptions {
  std::string label;
  WrappedKeyOptions wrapped;
};

int run_import(Context& context, const PersonalisationImportOptions& options) {
  const hsm::Bytes wrapped = wrapped_input(options.wrapped);
  context.provisioner(false).import_personalisation_key(options.label, wrapped);
  context.print(json::object{{"personalisation_key", options.label}, {"imported", true}},
                "imported personalisation key " + options.label + "\n");
  return kOk;
}

int run_list(Context& context) {
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

}  // namespace

void add_personalisation_commands(CLI::App& app, Context& context, Action& action) {
  auto* personalisation = app.add_subcommand("personalisation-key", "Manage personalisation keys");
  personalisation->require_subcommand(1);

  auto options = std::make_shared<PersonalisationImportOptions>();
  auto* import = personalisation->add_subcommand(
      "import", "Import a personalisation key wrapped (RFC 5649) under the transport key");
  import->add_option("--label", options->label, "Name of the key")->required();
  add_wrapped_options(import, options->wrapped, "File with the wrapped key",
                      "The wrapped key as hex");
  on_run(import, action, [&context, options] { return run_import(context, *options); });

  auto* list = personalisation->add_subcommand("list", "List personalisation keys");
  on_run(list, action, [&context] { return run_list(context); });
}

}  // namespace provisioning
