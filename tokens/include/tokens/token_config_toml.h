// For programs that parse the shared TOML file themselves (kmsd): load the token
// configuration from an already parsed table instead of reading the file twice.
#pragma once

#include <toml++/toml.h>

#include <filesystem>

#include "tokens/token_config.h"

namespace tokens {

// load_token_config(file) for the parsed contents `root` of `file`: the same defaults,
// environment, tables and relative-path rule (token_config.h). Throws ConfigError.
TokenConfig load_token_config(const toml::table& root, const std::filesystem::path& file);

}  // namespace tokens
