#include "kms/client/ue_client.h"

#include <chrono>

#include "kms/client/client_error.h"
#include "kms/client/crypto.h"
#include "kms/client/envelope_builder.h"
#include "kms/client/response_opener.h"

namespace kms::client {
namespace {

void require_identity(std::string_view id, const char* what) {
  if (!valid_identity(id)) {
    throw ClientError(ClientErrorCode::invalid_argument,
                      std::string(what) + " is not an IMS public identity");
  }
}

void require_nonce(ByteView nonce) {
  if (nonce.size() != kNonceSize) {
    throw ClientError(ClientErrorCode::invalid_argument, "nonce must be 32 bytes");
  }
}

std::uint64_t now_seconds() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

UeClient::UeClient(std::string identity, ByteView root_key, std::uint32_t key_version,
                   Profile profile)
    : identity_(std::move(identity)), key_version_(key_version), profile_(profile) {
  require_identity(identity_, "identity");
  const Bytes context = subscriber_child_context(identity_);
  envelope_key_ = kdf(profile_, root_key, label("envelope"), context);
  response_key_ = kdf(profile_, root_key, label("response"), context);
}

Secret UeClient::make_nonce() { return random_bytes(kNonceSize); }

Bytes UeClient::chair_envelope(ByteView chair_nonce, std::string_view responder_id, Suite suite,
                               const EnvelopeOptions& options) const {
  return make_envelope(MessageType::chair_invite, chair_nonce, identity_, responder_id, suite,
                       options);
}

Bytes UeClient::responder_envelope(ByteView responder_nonce, std::string_view chair_id, Suite suite,
                                   const EnvelopeOptions& options) const {
  return make_envelope(MessageType::responder_request, responder_nonce, chair_id, identity_, suite,
                       options);
}

Bytes UeClient::make_envelope(MessageType type, ByteView nonce, std::string_view chair_id,
                              std::string_view responder_id, Suite suite,
                              const EnvelopeOptions& options) const {
  require_nonce(nonce);
  require_identity(chair_id, "chair identity");
  require_identity(responder_id, "responder identity");
  if (!suite_lengths(static_cast<std::uint8_t>(suite))) {
    throw ClientError(ClientErrorCode::invalid_argument, "unknown suite");
  }
  EnvelopeFields fields;
  fields.type = type;
  fields.profile = static_cast<std::uint8_t>(profile_);
  fields.suite = static_cast<std::uint8_t>(suite);
  fields.key_version = key_version_;
  fields.timestamp = options.timestamp.value_or(now_seconds());
  if (options.iv) {
    fields.iv = *options.iv;
  } else {
    Secret iv = random_bytes(kIvSize);
    fields.iv.assign(iv.view().begin(), iv.view().end());
  }
  fields.chair_id = chair_id;
  fields.responder_id = responder_id;
  fields.encrypted_chair_id = chair_id;
  fields.encrypted_responder_id = responder_id;
  return seal_envelope(envelope_key_, fields, nonce);
}

MediaKey UeClient::open_chair_response(ByteView response, ByteView chair_nonce,
                                       std::string_view responder_id, Suite suite) const {
  require_nonce(chair_nonce);
  const Bytes expected_conference = conference_id(identity_, chair_nonce);
  return open_response(response, MessageType::chair_response, chair_nonce, identity_, responder_id,
                       suite, expected_conference);
}

MediaKey UeClient::open_responder_response(ByteView response, ByteView responder_nonce,
                                           std::string_view chair_id, Suite suite,
                                           ByteView expected_conference_id) const {
  require_nonce(responder_nonce);
  return open_response(response, MessageType::responder_response, responder_nonce, chair_id,
                       identity_, suite, expected_conference_id);
}

MediaKey UeClient::open_response(ByteView response, MessageType type, ByteView nonce,
                                 std::string_view chair_id, std::string_view responder_id,
                                 Suite suite, ByteView expected_conference_id) const {
  ResponseFields fields = parse_response(response);
  if (fields.type != static_cast<std::uint8_t>(type)) {
    throw ClientError(ClientErrorCode::unexpected_type,
                      "response type " + std::to_string(fields.type));
  }
  if (fields.profile != static_cast<std::uint8_t>(profile_)) {
    throw ClientError(ClientErrorCode::profile_mismatch, "response profile");
  }
  if (fields.suite != static_cast<std::uint8_t>(suite)) {
    throw ClientError(ClientErrorCode::suite_mismatch, "response suite");
  }
  if (!equal_constant_time(fields.conference_id, expected_conference_id)) {
    throw ClientError(ClientErrorCode::conference_mismatch, "conf_id");
  }
  const Bytes expected_key_id = key_id(fields.conference_id, identity_, nonce);
  if (!equal_constant_time(fields.key_id, expected_key_id)) {
    throw ClientError(ClientErrorCode::key_id_mismatch, "key_id");
  }
  const Secret context = response_wrap_context(type, fields.conference_id, chair_id, responder_id,
                                               nonce, fields.suite);
  const Secret wrap_key = kdf(profile_, response_key_, label("response-wrap"), context);
  Secret key = aes_key_unwrap_pad(wrap_key, fields.wrapped);
  if (key.size() != kKeySize) throw ClientError(ClientErrorCode::malformed_message, "key length");
  return make_media_key(std::move(fields.conference_id), std::move(fields.key_id), fields.suite,
                        std::move(key));
}

}  // namespace kms::client
