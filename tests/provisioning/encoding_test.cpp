#include "encoding.h"

#include <gtest/gtest.h>

namespace {

TEST(Encoding, HexAndBase64RoundTrip) {
  const hsm::Bytes data{0x00, 0x01, 0xfe, 0xff, 0x10, 0x20, 0x30};
  EXPECT_EQ(provisioning::to_hex(data), "0001feff102030");
  EXPECT_EQ(provisioning::from_hex("0001FEFF102030"), data);
  for (std::size_t n = 0; n <= data.size(); ++n) {
    const hsm::Bytes prefix(data.begin(), data.begin() + static_cast<long>(n));
    EXPECT_EQ(provisioning::from_base64(provisioning::to_base64(prefix)), prefix) << n;
  }
  EXPECT_EQ(provisioning::to_base64(hsm::Bytes{'f', 'o', 'o', 'b'}), "Zm9vYg==");
}

TEST(Encoding, DecodeBlobDetectsTheEncoding) {
  EXPECT_EQ(provisioning::decode_blob("  0a0b\n"), (hsm::Bytes{0x0a, 0x0b}));
  EXPECT_EQ(provisioning::decode_blob("Zm9vYg=="), (hsm::Bytes{'f', 'o', 'o', 'b'}));
  EXPECT_EQ(provisioning::decode_blob("Zm9vYg"), (hsm::Bytes{'f', 'o', 'o', 'b'}));  // unpadded
  EXPECT_EQ(provisioning::decode_blob("base64:abcd"), provisioning::from_base64("abcd"));
  EXPECT_EQ(provisioning::decode_blob("hex:abcd"), (hsm::Bytes{0xab, 0xcd}));
  EXPECT_FALSE(provisioning::decode_blob("").has_value());
  EXPECT_FALSE(provisioning::decode_blob("not*valid").has_value());
  EXPECT_FALSE(provisioning::decode_blob("hex:abc").has_value());
}

}  // namespace
