// POST /v1/key-request bodies through kms/server/src/wire.cpp (the decoder kmsd runs), then
// the key-request checks that come before any token call (identities, the envelopes'
// layout against the plain IDs); the key response and error bodies kms-client decodes.
// A body either decodes or is a typed ProtocolError; what decodes re-encodes to the same
// request. Anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kms/core/base64url.h"
#include "kms/core/envelope_codec.h"
#include "kms/core/protocol.h"
#include "kms/server/wire.h"
#include "tokens/identity.h"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

void envelopes_before_the_token(const kms::KeyRequest& request) {
  if (!tokens::is_ims_identity(request.chair_id) ||
      !tokens::is_ims_identity(request.responder_id)) {
    return;  // invalid_identity: the service refuses here
  }
  for (const auto* envelope : {&request.chair_envelope, &request.responder_envelope}) {
    try {
      (void)kms::protocol::parse_envelope(*envelope, request.chair_id, request.responder_id);
    } catch (const kms::ProtocolError&) {
    }
  }
}

void key_request(std::string_view body) {
  kms::KeyRequest request;
  try {
    request = kms::wire::key_request_from_json(body);
  } catch (const kms::ProtocolError&) {
    return;
  }
  const kms::KeyRequest again =
      kms::wire::key_request_from_json(kms::wire::key_request_to_json(request));
  require(again.chair_id == request.chair_id && again.responder_id == request.responder_id &&
          again.chair_envelope == request.chair_envelope &&
          again.responder_envelope == request.responder_envelope);
  envelopes_before_the_token(request);
}

void key_response(std::string_view body) {
  try {
    const kms::KeyResponse response = kms::wire::key_response_from_json(body);
    const kms::KeyResponse again =
        kms::wire::key_response_from_json(kms::wire::key_response_to_json(response));
    require(again.conference_id == response.conference_id &&
            again.chair_response == response.chair_response &&
            again.responder_response == response.responder_response);
  } catch (const kms::ProtocolError&) {
  }
}

void error_body(std::string_view body) {
  if (auto error = kms::wire::error_from_json(body)) {
    const auto again =
        kms::wire::error_from_json(kms::wire::error_to_json(error->error, error->detail));
    require(again && again->error == error->error && again->detail == error->detail);
  }
}

void base64url(std::string_view text) {
  try {  // strict decoding: what decodes is canonical and encodes back to the same text
    const kms::Bytes decoded = kms::base64url_decode(text, "fuzz");
    require(kms::base64url_encode(decoded) == text);
  } catch (const kms::ProtocolError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  key_request(body);
  key_response(body);
  error_body(body);
  base64url(body);
  return 0;
}
