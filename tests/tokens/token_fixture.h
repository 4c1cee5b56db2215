// A fresh test token (SoftHSM or NSS softoken) opened through tokens::TokenContext, with
// the KMS keys created the way kms-provision init creates them.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/test_token.h"
#include "tokens/key_templates.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace tokentest {

inline tokens::TokenConfig config_for(const testsupport::TestToken& token,
                                      const std::string& database) {
  tokens::TokenConfig config;
  const hsm::ModuleConfig module = token.module_config();
  config.module = module.module;
  config.init_reserved = module.init_reserved;
  config.uri = token.uri();
  config.pin_file = token.pin_file();
  config.profile = "auto";
  config.database = database;
  config.max_sessions = 4;
  return config;
}

// Creates M, the storage key and the transport key with the library's templates.
inline void create_kms_keys(tokens::TokenContext& context) {
  context.pool().run([&](hsm::Session& session) {
    tokens::generate_aes_key(session, tokens::templates::master_key(context.profile()));
    tokens::generate_aes_key(session, tokens::templates::storage_key());
    tokens::generate_aes_key(session, tokens::templates::transport_key());
    return 0;
  });
}

class TokenTest : public ::testing::TestWithParam<testsupport::TokenKind> {
 protected:
  void SetUp() override {
    token_ = testsupport::TestToken::create(GetParam());
    dir_ = std::make_unique<testsupport::TempDir>("kms-tokens-test");
    config_ = config_for(*token_, dir_->path() + "/kms.db");
    context_ = tokens::TokenContext::open(config_);
  }
  void TearDown() override {
    context_.reset();
    token_.reset();
  }

  std::unique_ptr<testsupport::TestToken> token_;
  std::unique_ptr<testsupport::TempDir> dir_;
  tokens::TokenConfig config_;
  std::unique_ptr<tokens::TokenContext> context_;
};

inline std::string kind_param_name(const ::testing::TestParamInfo<testsupport::TokenKind>& info) {
  return testsupport::token_kind_name(info.param);
}

}  // namespace tokentest
