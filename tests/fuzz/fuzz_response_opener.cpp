// kms_client's response opener on arbitrary bytes: parse_response, then the chair's and the
// responder's open with the vector keys and nonces (docs/PROTOCOL.md "Test vectors"; the
// profile is the one the message names, so the vector responses open). A response opens or
// is a typed ClientError; anything else (another exception, a crash, a sanitizer report) is
// a bug.
#include <cstdint>
#include <cstdlib>

#include "kms/client/client_error.h"
#include "kms/client/response_opener.h"
#include "kms/client/ue_client.h"

namespace {

using kms::client::Bytes;
using kms::client::ByteView;
using kms::client::Profile;

void require(bool condition) {
  if (!condition) std::abort();
}

Bytes counting(std::uint8_t first, std::size_t count) {
  Bytes out(count);
  for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<std::uint8_t>(first + i);
  return out;
}

const std::string kChair = "sip:alice@ims.example.net";
const std::string kResponder = "sip:bob@ims.example.net";

struct Vectors {
  Bytes k_a = counting(0x00, 32);
  Bytes k_b = counting(0x20, 32);
  Bytes r_a = counting(0xa0, 32);
  Bytes r_b = counting(0xc0, 32);
  Bytes conf_id = kms::client::conference_id(kChair, r_a);
};

void open(ByteView response, Profile profile) {
  static const Vectors v;
  const kms::client::UeClient chair(kChair, v.k_a, 1, profile);
  const kms::client::UeClient responder(kResponder, v.k_b, 1, profile);
  try {
    const auto key = chair.open_chair_response(response, v.r_a, kResponder,
                                               kms::client::Suite::aes_cm_128_hmac_sha1_80);
    require(key.key.size() == kms::client::kKeySize);
  } catch (const kms::client::ClientError&) {
  }
  try {
    const auto key = responder.open_responder_response(
        response, v.r_b, kChair, kms::client::Suite::aes_cm_128_hmac_sha1_80, v.conf_id);
    require(key.key.size() == kms::client::kKeySize);
  } catch (const kms::client::ClientError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView response(data, size);
  try {
    const auto fields = kms::client::parse_response(response);
    require(size == kms::client::kResponseSize && fields.conference_id.size() == 16 &&
            fields.key_id.size() == 8 && fields.wrapped.size() == 40);
  } catch (const kms::client::ClientError&) {
  }
  const Profile profile =
      size > 2 && data[2] == 2 ? Profile::sp800_108_cmac : Profile::aes_ecb_sha256;
  open(response, profile);
  return 0;
}
