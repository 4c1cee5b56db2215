// A fresh test token opened through tokens/, without a test framework: shared by the
// tokens and provisioning tests and the tokens benchmark.
#pragma once

#include <string>

#include "support/test_token.h"
#include "tokens/key_templates.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace tokentest {

// The library's defaults, except the test token's module, URI and PIN file and `database`.
inline tokens::TokenConfig config_for(const testsupport::TestToken& token,
                                      const std::string& database) {
  tokens::TokenConfig config;
  const hsm::ModuleConfig module = token.module_config();
  config.module = module.module;
  config.init_reserved = module.init_reserved;
  config.uri = token.uri();
  config.pin_file = token.pin_file();
  config.database = database;
  return config;
}

// Creates M, the storage key and the transport key with the library's templates.
inline void create_kms_keys(tokens::TokenContext& context) {
  context.pool().run([&](hsm::Session& session) {
    tokens::generate_aes_key(session, tokens::templates::master_key(context.profile()));
    tokens::generate_aes_key(session, tokens::templates::storage_key(context.profile()));
    tokens::generate_aes_key(session, tokens::templates::transport_key(context.profile()));
    return 0;
  });
}

}  // namespace tokentest
