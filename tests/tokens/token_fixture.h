// A fresh test token (SoftHSM or NSS softoken) opened through tokens::TokenContext, with
// the KMS keys created the way kms-provision init creates them.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/test_token.h"
#include "token_setup.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace tokentest {

class TokenTest : public ::testing::TestWithParam<testsupport::TokenKind> {
 protected:
  void SetUp() override {
    token_ = testsupport::TestToken::create(GetParam());
    dir_ = std::make_unique<testsupport::TempDir>("kms-tokens-test");
    config_ = config_for(*token_, dir_->path() + "/kms.db");
    config_.max_sessions = 4;
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
