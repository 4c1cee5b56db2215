// A fresh token (SoftHSM or NSS softoken) with its module loaded and a logged-in pool,
// for tests parameterised over both token kinds.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "hsm/session_pool.h"
#include "hsm/uri.h"
#include "test_token.h"

namespace hsmtest {

class TokenTest : public ::testing::TestWithParam<testsupport::TokenKind> {
 protected:
  void SetUp() override {
    token_ = testsupport::TestToken::create(GetParam());
    module_ = hsm::Module::load(token_->module_config());
    slot_ = hsm::TokenUri::parse(token_->uri()).select(*module_).slot;
  }
  void TearDown() override {
    pool_.reset();
    module_.reset();
    token_.reset();
  }

  hsm::SessionPool& pool(hsm::PoolConfig config = {}) {
    if (!pool_)
      pool_ = std::make_unique<hsm::SessionPool>(module_, slot_, token_->user_pin(), config);
    return *pool_;
  }
  bool is_nss() const { return GetParam() == testsupport::TokenKind::nss; }
  // RFC 5649 key wrap mechanism of this token (see TOKEN-NOTES.md).
  CK_MECHANISM_TYPE kwp() const { return is_nss() ? CKM_AES_KEY_WRAP_KWP : CKM_AES_KEY_WRAP_PAD; }

  std::unique_ptr<testsupport::TestToken> token_;
  std::shared_ptr<hsm::Module> module_;
  CK_SLOT_ID slot_ = 0;
  std::unique_ptr<hsm::SessionPool> pool_;
};

inline std::string kind_name(const ::testing::TestParamInfo<testsupport::TokenKind>& info) {
  return testsupport::token_kind_name(info.param);
}

#define HSM_INSTANTIATE_FOR_TOKENS(Suite)                                              \
  INSTANTIATE_TEST_SUITE_P(                                                            \
      Tokens, Suite,                                                                   \
      ::testing::Values(testsupport::TokenKind::softhsm, testsupport::TokenKind::nss), \
      ::hsmtest::kind_name)

}  // namespace hsmtest
