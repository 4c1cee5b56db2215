// The fixed inputs of the test vectors in docs/PROTOCOL.md ("Test vectors").
#pragma once

#include <cstdint>
#include <string>

#include "kms/client/secret.h"

namespace kmstest {

using kms::client::Bytes;

// bytes first, first+1, ..., first+count-1
inline Bytes counting(std::uint8_t first, std::size_t count) {
  Bytes out(count);
  for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<std::uint8_t>(first + i);
  return out;
}

struct VectorInputs {
  std::string chair_id = "sip:alice@ims.example.net";
  std::string member_b_id = "sip:bob@ims.example.net";
  std::string member_c_id = "tel:+15551234567";
  std::string bridge_id = "sip:bridge1@conf.example.net";
  Bytes k_a = counting(0x00, 32);
  Bytes k_b = counting(0x20, 32);
  Bytes k_c = counting(0x40, 32);
  Bytes master = counting(0x60, 32);
  Bytes bridge_key = counting(0x80, 32);
  Bytes r_a = counting(0xa0, 32);
  Bytes r_b = counting(0xc0, 32);
  Bytes r_c = counting(0xe0, 32);
  Bytes iv_a_for_b = counting(0x10, 12);
  Bytes iv_b = counting(0x20, 12);
  Bytes iv_a_for_c = counting(0x30, 12);
  Bytes iv_c = counting(0x40, 12);
  std::uint64_t time =
      1767225600;  // 2026-01-01T00:00:00Z: E_A(B) at T, E_B T+1, E_A(C) T+2, E_C T+3
  std::int64_t server_time = 1767225605;  // the KMS clock when it processes the requests
  std::uint8_t suite = 1;
  std::uint32_t key_version = 1;
};

}  // namespace kmstest
