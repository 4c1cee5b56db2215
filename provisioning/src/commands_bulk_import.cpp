// subscriber / bridge import --file: many keys wrapped under the transport key, in batches;
// bad lines are reported and skipped (exit code 12 when there were any).
#include <iostream>

#include "bulk_file.h"
#include "commands.h"
#include "exit_codes.h"

namespace provisioning {

int run_bulk_import(Context& context, tokens::IdentityKind kind, const BulkImportOptions& options) {
  namespace json = boost::json;
  const BulkFile file = parse_bulk_file(options.file, options.format);
  const ImportResult result = context.provisioner(true).import_bulk(kind, file, options.batch_size);
  json::array failed;
  for (const auto& problem : result.failed) {
    failed.emplace_back(json::object{
        {result.unit, problem.number}, {"identity", problem.identity}, {"reason", problem.reason}});
    std::cerr << options.file << ": " << result.unit << " " << problem.number << ": "
              << one_line(problem.reason) << "\n";
  }
  context.print(json::object{{"imported", result.imported}, {"failed", std::move(failed)}},
                "imported " + std::to_string(result.imported) + " " +
                    std::string(tokens::kind_name(kind)) + "s, " +
                    std::to_string(result.failed.size()) + " failed\n");
  return result.failed.empty() ? kOk : kPartialImport;
}

}  // namespace provisioning
