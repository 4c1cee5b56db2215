// db migrate: creates or upgrades every table of the KMS database (docs/OPERATIONS.md "The
// database"), without the token. SQLite files are migrated when opened anyway; a PostgreSQL
// database that kmsd opens with migrate=check needs this first.
#include "commands.h"
#include "exit_codes.h"
#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "tokens/key_database.h"

namespace provisioning {
namespace {

namespace json = boost::json;

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
  return kOk;
}

}  // namespace

void add_db_commands(CLI::App& app, Context& context, Action& action) {
  auto* db = app.add_subcommand("db", "The KMS database (SQLite file or PostgreSQL server)");
  db->require_subcommand(1);
  auto* migrate = db->add_subcommand(
      "migrate", "Create or upgrade the database's tables to this version (no token needed)");
  migrate->callback([&] { action = [&] { return run_db_migrate(context); }; });
}

}  // namespace provisioning
