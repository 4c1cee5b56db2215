// kmsd's configuration parser (kms/server/src/config.cpp, which hands [token] and
// [database] to the token layer's parser) on arbitrary files. load_config reports every
// problem in its result and never throws; a throw, a crash or a sanitizer report is a bug.
// The input is written to one file in a private temporary folder (load_config reads a
// path: relative paths in the file resolve against that folder).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "kms/server/config.h"

namespace {

const std::filesystem::path& config_file() {
  static const std::filesystem::path file = [] {
    std::string folder = (std::filesystem::temp_directory_path() / "kms-fuzz-config-XXXXXX");
    if (::mkdtemp(folder.data()) == nullptr) std::abort();
    return std::filesystem::path(folder) / "kmsd.toml";
  }();
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  {
    std::ofstream out(config_file(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();
  }
  const kms::server::LoadResult result = kms::server::load_config(config_file());
  if (result.ok()) (void)kms::server::validate(result.config);
  return 0;
}
