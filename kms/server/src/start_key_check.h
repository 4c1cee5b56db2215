// kmsd's start-time key check (tokens/key_check.h, docs/OPERATIONS.md "The key check at
// start"): this node's token against the key check values recorded in the database.
#pragma once

#include <string>

#include "kms/server/logger.h"
#include "tokens/token_context.h"

namespace kms::server {

// Logs what it found: the values recorded (none were), matching, or keys not checked.
// Throws tokens::KeyMismatchError when this token holds other keys than recorded (kmsd
// then exits 3), tokens::DatabaseError when the database fails.
void check_token_keys_at_start(tokens::TokenContext& token, const std::string& database,
                               const std::string& node_name, Logger& logger);

}  // namespace kms::server
