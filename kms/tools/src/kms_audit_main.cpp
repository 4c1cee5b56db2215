// kms-audit: checks the hash chain of kmsd's audit log.
//   kms-audit verify FILE [--anchor-db DB | --config kmsd.toml]
//     exit 0 if the chain is intact (and holds the record anchored in DB), 1 at the first
//     broken record or when the anchored record is missing or different, 2 unreadable
//     (or a usage error: unknown option, missing argument)
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <optional>

#include "audit_anchor_db.h"
#include "kms/audit/audit_verify.h"
#include "kms/version.h"
#include "tokens/token_config.h"

namespace {
constexpr int kUsage = 2;
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kms-audit: inspect and verify kmsd's hash-chained audit log"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kms-audit " KMS_VERSION);
  std::string file;
  std::string anchor_db;
  std::string config_file;
  bool quiet = false;
  auto* verify = app.add_subcommand(
      "verify",
      "Check every record's hash, its sequence number and its link to the previous "
      "record; report the first broken record (line number). Exit 0 intact, 1 broken, "
      "2 unreadable.");
  verify->add_option("FILE", file, "audit log (JSON lines)")->required();
  verify->add_option("--anchor-db", anchor_db,
                     "kmsd's registry database: the log must still hold the record (seq and "
                     "hash) anchored there by the last committed admission or release; "
                     "detects deleted last records, which the chain alone cannot");
  verify
      ->add_option("--config", config_file,
                   "kmsd's configuration file: --anchor-db is its database, found as kmsd and "
                   "kms-provision find it ([database] path, KMS_DATABASE)")
      ->check(CLI::ExistingFile)
      ->excludes("--anchor-db");
  verify->add_flag("-q,--quiet", quiet, "print nothing on success");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // app.exit prints the problem (or the help); CLI11's own codes are not kms-audit's.
    return app.exit(error) == 0 ? 0 : kUsage;
  }

  if (!config_file.empty()) {
    try {
      anchor_db = tokens::load_token_config(std::filesystem::path(config_file)).database;
    } catch (const tokens::ConfigError& error) {
      std::cerr << "kms-audit: " << error.what() << "\n";
      return 2;
    }
  }

  std::optional<kms::AuditHead> anchor;
  if (!anchor_db.empty()) {
    try {
      anchor = kms::tools::read_audit_anchor(anchor_db);
    } catch (const kms::tools::AnchorDbError& error) {
      std::cerr << "kms-audit: " << error.what() << "\n";
      return 2;
    }
  }

  const kms::audit::VerifyResult result = kms::audit::verify_file(file, anchor);
  if (result.ok) {
    if (!quiet) {
      std::cout << "ok: " << file << ": " << result.records << " records, last seq "
                << result.last_seq << ", head " << result.head_hash << "\n";
      if (anchor) {
        std::cout << "ok: anchored seq " << anchor->seq << " (" << anchor_db
                  << ") present and unchanged\n";
      } else if (!anchor_db.empty()) {
        std::cout << "note: " << anchor_db << " holds no audit anchor yet (nothing committed)\n";
      }
    }
    return 0;
  }
  if (result.anchor_missing) {
    std::cout << "BROKEN: " << file << ": " << result.problem << "\n";
    return 1;
  }
  if (result.broken_line == 0) {
    std::cerr << "kms-audit: " << result.problem << "\n";
    return 2;
  }
  std::cout << "BROKEN: " << file << ": line " << result.broken_line << ": " << result.problem
            << " (" << result.records << " records verified before it)\n";
  return 1;
}
