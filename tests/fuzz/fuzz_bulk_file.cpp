// kms-provision's bulk import parser (provisioning/src/bulk_file.cpp) on arbitrary text.
// The first byte picks the format (odd: JSON / JSON Lines, even: CSV). A file parses into
// entries and problems, or is a FileError (not JSON at all); anything else (another
// exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "bulk_file.h"
#include "errors.h"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string format = (data[0] & 1) != 0 ? "json" : "csv";
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    const provisioning::BulkFile file = provisioning::parse_bulk_text(text, format);
    require(file.unit == "line" || file.unit == "entry");
    std::size_t last = 0;
    for (const auto& entry : file.entries) {
      require(entry.number > last);  // numbered from 1, in file order
      last = entry.number;
    }
  } catch (const provisioning::FileError&) {  // "bulk file is not valid JSON"
  }
  return 0;
}
