#include "kms/client/response_opener.h"

#include "kms/client/client_error.h"

namespace kms::client {

MediaKey make_media_key(Bytes conference_id, Bytes key_id, std::uint8_t suite, Secret key) {
  auto lengths = suite_lengths(suite);
  if (!lengths) throw ClientError(ClientErrorCode::malformed_message, "unknown suite");
  if (key.size() != kKeySize) throw ClientError(ClientErrorCode::malformed_message, "key length");
  MediaKey media;
  media.conference_id = std::move(conference_id);
  media.key_id = std::move(key_id);
  media.suite = suite;
  media.master_key = Secret(key.view().subspan(0, lengths->master_key));
  media.master_salt = Secret(key.view().subspan(lengths->master_key, lengths->master_salt));
  media.key = std::move(key);
  return media;
}

ResponseFields parse_response(ByteView response) {
  if (response.empty()) throw ClientError(ClientErrorCode::malformed_message, "empty response");
  if (response[0] != kProtocolVersion) {
    throw ClientError(ClientErrorCode::malformed_message, "unsupported version");
  }
  if (response.size() != kResponseSize) {
    throw ClientError(ClientErrorCode::malformed_message,
                      "response must be " + std::to_string(kResponseSize) + " bytes, got " +
                          std::to_string(response.size()));
  }
  const std::size_t wrapped_size = (std::size_t{response[28]} << 8) | response[29];
  if (wrapped_size != kWrappedKeySize) {
    throw ClientError(ClientErrorCode::malformed_message, "wrapped key length field");
  }
  ResponseFields fields;
  fields.version = response[0];
  fields.type = response[1];
  fields.profile = response[2];
  fields.suite = response[3];
  fields.conference_id.assign(response.begin() + 4, response.begin() + 20);
  fields.key_id.assign(response.begin() + 20, response.begin() + 28);
  fields.wrapped.assign(response.begin() + 30, response.end());
  return fields;
}

}  // namespace kms::client
