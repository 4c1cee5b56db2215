// docs/PROTOCOL.md's test vectors against the client-side reference, and the KDF layouts
// the document states checked against a from-the-definition computation.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "kms/client/crypto.h"
#include "kms/core/protocol.h"
#include "protocol_doc.h"
#include "reference_kms.h"

namespace {

using kms::client::Bytes;
using kms::client::Profile;

class DocVectors : public ::testing::TestWithParam<Profile> {};

TEST_P(DocVectors, DocumentMatchesTheClientLibrary) {
  const kmstest::NamedValues doc = kmstest::vectors_from_doc(static_cast<int>(GetParam()));
  const kmstest::NamedValues code = kmstest::compute_vectors(GetParam());
  ASSERT_FALSE(doc.empty()) << "no vectors for this profile in " << kmstest::protocol_doc_path();
  ASSERT_EQ(doc.size(), code.size());
  for (std::size_t i = 0; i < doc.size(); ++i) {
    EXPECT_EQ(doc[i].first, code[i].first);
    EXPECT_EQ(kmstest::hex(doc[i].second), kmstest::hex(code[i].second)) << doc[i].first;
  }
}

TEST_P(DocVectors, ServerSideIdentifiersMatchTheDocument) {
  const kmstest::NamedValues doc = kmstest::vectors_from_doc(static_cast<int>(GetParam()));
  const kmstest::VectorInputs in;
  const Bytes conf = kms::protocol::conference_id(in.chair_id, in.r_a);
  EXPECT_EQ(conf, kmstest::value_of(doc, "conf_id"));
  EXPECT_EQ(kms::protocol::key_id(conf, in.member_b_id, in.r_b),
            kmstest::value_of(doc, "key_id_B"));
}

INSTANTIATE_TEST_SUITE_P(Profiles, DocVectors,
                         ::testing::Values(Profile::aes_ecb_sha256, Profile::sp800_108_cmac),
                         [](const auto& info) {
                           return info.param == Profile::aes_ecb_sha256 ? "AesEcbSha256"
                                                                        : "Sp800108Cmac";
                         });

Bytes cmac(const Bytes& key, const Bytes& message) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "CMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char cipher[] = "AES-256-CBC";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cipher, 0),
                         OSSL_PARAM_construct_end()};
  Bytes out(16);
  size_t size = 0;
  EXPECT_EQ(EVP_MAC_init(ctx, key.data(), key.size(), params), 1);
  EXPECT_EQ(EVP_MAC_update(ctx, message.data(), message.size()), 1);
  EXPECT_EQ(EVP_MAC_final(ctx, out.data(), &size, out.size()), 1);
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return out;
}

TEST(KdfDefinition, Sp800108CounterLayoutIsTheDocumentedOne) {
  const Bytes key = kmstest::counting(1, 32);
  const Bytes label = kms::client::label("envelope");
  const Bytes context = {0x00, 0x03, 'a', 'b', 'c'};
  Bytes expected;
  for (std::uint32_t i = 1; i <= 2; ++i) {
    Bytes block;
    kms::client::append_u32(block, i);
    block.insert(block.end(), label.begin(), label.end());
    block.push_back(0x00);
    block.insert(block.end(), context.begin(), context.end());
    kms::client::append_u32(block, 256);
    const Bytes out = cmac(key, block);
    expected.insert(expected.end(), out.begin(), out.end());
  }
  const auto derived = kms::client::kdf(Profile::sp800_108_cmac, key, label, context);
  EXPECT_EQ(Bytes(derived.view().begin(), derived.view().end()), expected);
}

TEST(KdfDefinition, AesEcbOverSha256IsTheDocumentedOne) {
  const Bytes key = kmstest::counting(1, 32);
  const Bytes label = kms::client::label("response");
  const Bytes context = {0x00, 0x01, 'x'};
  Bytes input = label;
  input.push_back(0x00);
  input.insert(input.end(), context.begin(), context.end());
  std::uint8_t digest[32];
  SHA256(input.data(), input.size(), digest);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  Bytes expected(32 + 16);
  int n = 0;
  ASSERT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr), 1);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  ASSERT_EQ(EVP_EncryptUpdate(ctx, expected.data(), &n, digest, 32), 1);
  EVP_CIPHER_CTX_free(ctx);
  expected.resize(32);
  const auto derived = kms::client::kdf(Profile::aes_ecb_sha256, key, label, context);
  EXPECT_EQ(Bytes(derived.view().begin(), derived.view().end()), expected);
}

}  // namespace
