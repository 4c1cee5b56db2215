// kms-audit: checks the hash chain of kmsd's audit log.
//   kms-audit verify FILE   exit 0 if the chain is intact, 1 at the first broken record
#include <CLI/CLI.hpp>
#include <iostream>

#include "kms/audit/audit_verify.h"

int main(int argc, char** argv) {
  CLI::App app{"kms-audit: inspect and verify kmsd's hash-chained audit log"};
  app.require_subcommand(1);
  std::string file;
  bool quiet = false;
  auto* verify = app.add_subcommand(
      "verify",
      "Check every record's hash, its sequence number and its link to the previous "
      "record; report the first broken record (line number). Exit 0 intact, 1 broken, "
      "2 unreadable.");
  verify->add_option("FILE", file, "audit log (JSON lines)")->required();
  verify->add_flag("-q,--quiet", quiet, "print nothing on success");
  CLI11_PARSE(app, argc, argv);

  const kms::audit::VerifyResult result = kms::audit::verify_file(file);
  if (result.ok) {
    if (!quiet) {
      std::cout << "ok: " << file << ": " << result.records << " records, last seq "
                << result.last_seq << ", head " << result.head_hash << "\n";
    }
    return 0;
  }
  if (result.broken_line == 0) {
    std::cerr << "kms-audit: " << result.problem << "\n";
    return 2;
  }
  std::cout << "BROKEN: " << file << ": line " << result.broken_line << ": " << result.problem
            << " (" << result.records << " records verified before it)\n";
  return 1;
}
