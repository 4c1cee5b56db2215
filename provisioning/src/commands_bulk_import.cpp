// subscriber / bridge import --file: many keys wrapped under the transport key, in chunks;
// bad lines are reported and skipped (exit code 12 when there were any).
#include <algorithm>
#include <iostream>

#include "bulk_file.h"
#include "commands.h"
#include "exit_codes.h"

namespace provisioning {
namespace {

void report_failures(const std::string& path, const ImportResult& result) {
  for (const auto& problem : result.failed) {
    std::cerr << path << ": " << result.unit << " " << problem.number << ": "
              << one_line(problem.reason) << "\n";
  }
}

}  // namespace

int run_bulk_import(Context& context, tokens::IdentityKind kind, const BulkImportOptions& options) {
  namespace json = boost::json;
  const BulkFile file = parse_bulk_file(options.file, options.format);
  const std::string kinds = std::string(tokens::kind_name(kind)) + "s";
  BulkImportSettings settings;
  settings.batch_size = options.batch_size;
  settings.skip_existing = options.skip_existing;
  ImportResult progress;
  progress.unit = file.unit;
  settings.on_commit = [&progress](const ImportResult& so_far) {
    progress.imported = so_far.imported;
    progress.committed_through = so_far.committed_through;
    // Only the failures new since the last commit: no quadratic copying.
    progress.failed.insert(
        progress.failed.end(),
        so_far.failed.begin() + static_cast<std::ptrdiff_t>(progress.failed.size()),
        so_far.failed.end());
  };
  ImportResult result;
  try {
    result = context.provisioner(true).import_bulk(kind, file, settings);
  } catch (...) {
    // Not a line's fault (token, database). When chunks were committed already: what stays
    // imported, then the error itself; else the database is unchanged, as for any failure.
    if (progress.committed_through > 0) {
      std::sort(progress.failed.begin(), progress.failed.end(),
                [](const BulkProblem& a, const BulkProblem& b) { return a.number < b.number; });
      report_failures(options.file, progress);
      std::cerr << options.file << ": stopped: " << progress.imported << " " << kinds
                << " imported; every " << file.unit << " up to " << progress.committed_through
                << " is done, none after it is imported (run the file again with "
                   "--skip-existing to import the rest)\n";
    }
    throw;
  }
  json::array failed;
  for (const auto& problem : result.failed) {
    failed.emplace_back(json::object{
        {result.unit, problem.number}, {"identity", problem.identity}, {"reason", problem.reason}});
  }
  report_failures(options.file, result);
  for (const std::string& warning : result.warnings) {
    std::cerr << "kms-provision: warning: " << warning << "\n";
  }
  std::string human = "imported " + std::to_string(result.imported) + " " + kinds + ", " +
                      std::to_string(result.failed.size()) + " failed";
  if (options.skip_existing) {
    human += ", " + std::to_string(result.skipped) + " already present (skipped)";
  }
  context.print(json::object{{"imported", result.imported},
                             {"skipped", result.skipped},
                             {"failed", std::move(failed)},
                             {"token_instances", result.token_instances}},
                human + "\n");
  return result.failed.empty() ? kOk : kPartialImport;
}

}  // namespace provisioning
