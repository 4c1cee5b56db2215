// The store at scale: 10,000 subscribers through kms-provision's bulk
// import in wrapped mode; every one resolves to the right key in the token, the token holds
// only the KMS's own keys, and revoked subscribers no longer resolve. SoftHSM only.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "cli_fixture.h"
#include "key_proof.h"
#include "tokens/key_store.h"

namespace {

using clitest::Bytes;
using clitest::hex;
using tokens::IdentityKind;

class StoreTest : public clitest::CliTest {};

std::string identity(int i) { return "sip:user" + std::to_string(i) + "@ims.example.net"; }

TEST_P(StoreTest, TenThousandSubscribersInWrappedMode) {
  constexpr int kSubscribers = 10000;
  init();
  std::vector<Bytes> keys;
  std::string csv = "identity,wrapped_key\n";
  for (int i = 0; i < kSubscribers; ++i) {
    keys.push_back(testkdf::random_bytes(32));
    csv += identity(i) + "," + hex(testkdf::wrap_pad(transport_, keys.back())) + "\n";
  }
  const std::string file = dir_->path() + "/keys.csv";
  clitest::write_file(file, csv);

  const auto start = std::chrono::steady_clock::now();
  auto result = cli({"subscriber", "import", "--file", file});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("imported 10000 subscribers, 0 failed"), std::string::npos)
      << result.out;
  std::printf("bulk import: %d subscribers in %.1f s (%.0f/s)\n", kSubscribers, seconds,
              kSubscribers / seconds);

  // The token holds only the KMS's own keys.
  EXPECT_EQ(token_objects(),
            (std::vector<std::string>{"kms/master", "kms/storage", "kms/transport"}));

  // Revoke a few through the CLI.
  const std::vector<int> revoked = {0, 17, 4242, 9999};
  for (int i : revoked) {
    result = cli({"subscriber", "revoke", identity(i)});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  auto context = open_token();
  tokens::KeyDatabase db(database_);
  EXPECT_EQ(db.count(IdentityKind::subscriber, tokens::KeyStatus::active),
            static_cast<std::size_t>(kSubscribers) - revoked.size());
  // The store must not outlive the token context (key_store.h): destroyed before it, below.
  auto store = std::make_unique<tokens::KeyStore>(*context, db, 1000);
  int usable = 0, refused = 0;
  const auto resolve_start = std::chrono::steady_clock::now();
  for (int i = 0; i < kSubscribers; ++i) {
    const bool is_revoked = std::find(revoked.begin(), revoked.end(), i) != revoked.end();
    try {
      const auto key = store->resolve(IdentityKind::subscriber, identity(i));
      EXPECT_FALSE(is_revoked) << identity(i) << " resolved after revocation";
      if (testkdf::key_holds(*context, key.handle(), keys[static_cast<std::size_t>(i)])) {
        ++usable;
      } else {
        ADD_FAILURE() << identity(i) << " resolved to the wrong key";
      }
    } catch (const tokens::LookupError& error) {
      EXPECT_TRUE(is_revoked) << error.what();
      EXPECT_EQ(error.reason(), tokens::LookupError::Reason::revoked);
      ++refused;
    }
  }
  const double resolve_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - resolve_start).count();
  std::printf("resolve + prove: %d keys in %.1f s\n", kSubscribers, resolve_seconds);
  EXPECT_EQ(usable, kSubscribers - static_cast<int>(revoked.size()));
  EXPECT_EQ(refused, static_cast<int>(revoked.size()));
  EXPECT_LE(store->stats().cached, 1000u);
  store.reset();
  context.reset();
  // Resolving created only session objects: still no subscriber key among the token objects.
  EXPECT_EQ(token_objects().size(), 3u);
}

INSTANTIATE_TEST_SUITE_P(Tokens, StoreTest, ::testing::Values(testsupport::TokenKind::softhsm),
                         clitest::kind_param_name);

}  // namespace
