// kms/core's envelope codec on arbitrary bytes: a typed ProtocolError or a parse that
// serialises back to exactly the input. Anything else (another exception, a crash, a
// sanitizer report) is a bug.
#include <cstdint>
#include <cstdlib>

#include "kms/core/envelope_codec.h"

namespace {

using kms::Bytes;
using kms::protocol::ByteView;

void require(bool condition) {
  if (!condition) std::abort();
}

void envelope(ByteView input) {
  try {
    const auto parsed = kms::protocol::parse_envelope(input);
    require(kms::protocol::serialize_envelope(parsed) == Bytes(input.begin(), input.end()));
    require(kms::protocol::envelope_header(parsed).size() == kms::protocol::kEnvelopeHeaderSize);
    (void)kms::protocol::envelope_aad(parsed, "sip:alice@ims.example.net",
                                      "sip:bob@ims.example.net");
  } catch (const kms::ProtocolError&) {
  }
  // With the vector's plain IDs (docs/PROTOCOL.md "Test vectors"): the size check.
  try {
    const auto parsed = kms::protocol::parse_envelope(input, "sip:alice@ims.example.net",
                                                      "sip:bob@ims.example.net");
    require(input.size() == kms::protocol::envelope_size_for("sip:alice@ims.example.net",
                                                             "sip:bob@ims.example.net"));
    require(parsed.sealed.size() == input.size() - kms::protocol::kEnvelopeHeaderSize);
  } catch (const kms::ProtocolError&) {
  }
}

// The decrypted plaintext R || lp(ID-A) || lp(ID-B): the parse must rebuild the input.
void plaintext(ByteView input) {
  try {
    const auto parsed = kms::protocol::parse_envelope_plaintext(input);
    Bytes rebuilt(parsed.nonce.view().begin(), parsed.nonce.view().end());
    kms::protocol::append_lp(rebuilt, parsed.chair_id);
    kms::protocol::append_lp(rebuilt, parsed.responder_id);
    require(rebuilt == Bytes(input.begin(), input.end()));
  } catch (const kms::ProtocolError&) {
  }
}

void response(ByteView input) {
  try {
    const auto parsed = kms::protocol::parse_response(input);
    require(kms::protocol::serialize_response(parsed) == Bytes(input.begin(), input.end()));
  } catch (const kms::ProtocolError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  envelope(input);
  plaintext(input);
  response(input);
  return 0;
}
