// For programs that parse the shared TOML file themselves (kmsd): apply an already parsed
// table instead of reading the file twice.
#pragma once

#include <toml++/toml.h>

#include <string_view>

#include "tokens/token_config.h"

namespace tokens {

// Overrides `config` with root["token"] and root["database"]. Throws ConfigError.
void apply_config_table(TokenConfig& config, const toml::table& root,
                        std::string_view source_name = "config");

}  // namespace tokens
