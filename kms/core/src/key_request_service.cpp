#include "kms/core/key_request_service.h"

#include <utility>

#include "kms/core/envelope_codec.h"
#include "kms/core/error_mapping.h"
#include "kms/hex.h"
#include "token_steps.h"
#include "tokens/identity.h"
#include "tokens/key_templates.h"

namespace kms {
namespace {

using protocol::MessageType;

// What the token work produced for one request: responses and what the registry needs.
struct Computed {
  Bytes conference_id;
  hsm::SecureBytes chair_nonce;
  hsm::SecureBytes responder_nonce;
  Bytes chair_key_id;
  Bytes responder_key_id;
  Bytes chair_response;
  Bytes responder_response;
};

void check_identity(const std::string& id, const char* role) {
  if (auto why = tokens::ims_identity_error(id)) {
    throw ProtocolError(ErrorCode::invalid_identity, std::string(role) + ": " + *why);
  }
}

void check_fresh(std::uint64_t timestamp, std::int64_t now, std::int64_t window,
                 const char* whose) {
  const auto ts = static_cast<std::int64_t>(std::min<std::uint64_t>(timestamp, INT64_MAX / 2));
  if (ts < now - window || ts > now + window) {
    throw ProtocolError(ErrorCode::stale_timestamp, std::string(whose) + " envelope timestamp " +
                                                        std::to_string(timestamp) +
                                                        " outside now " + std::to_string(now) +
                                                        " +/- " + std::to_string(window) + " s");
  }
}

void check_version(std::uint32_t envelope_version, std::uint32_t current, const char* whose) {
  if (envelope_version != current) {
    throw ProtocolError(ErrorCode::key_version_mismatch,
                        std::string(whose) + " envelope names key version " +
                            std::to_string(envelope_version) + ", current is " +
                            std::to_string(current));
  }
}

// One response: W_X derived in the token from the kept KR_X, and the media key K (derived
// by the caller) wrapped under it.
Bytes make_response(hsm::Session& session, const tokens::TokenProfile& profile,
                    CK_OBJECT_HANDLE response_key, CK_OBJECT_HANDLE media_key, MessageType type,
                    const Bytes& conference_id, const KeyRequest& request,
                    const hsm::SecureBytes& nonce, const Bytes& key_id, std::uint8_t suite) {
  const hsm::SecureBytes wrap_context = protocol::response_wrap_context(
      type, conference_id, request.chair_id, request.responder_id, nonce.view(), suite);
  hsm::ObjectGuard wrap_key =
      token_steps::derive(session, profile, response_key, "response-wrap", wrap_context.view(),
                          tokens::templates::response_wrap_key());
  protocol::Response response;
  response.type = type;
  response.profile = profile.wire_id();
  response.suite = suite;
  response.conference_id = conference_id;
  response.key_id = key_id;
  response.wrapped = token_steps::wrap(session, profile, wrap_key.get(), media_key);
  return protocol::serialize_response(response);
}

}  // namespace

TokenKeyRequestService::TokenKeyRequestService(tokens::TokenContext& token, tokens::KeyStore& keys,
                                               ConferenceRegistry& registry, AuditSink& audit,
                                               ServiceConfig config)
    : token_(token), keys_(keys), registry_(registry), audit_(audit), config_(std::move(config)) {
  // KE_X and KR_X depend only on K_X and ID-X: derived once per cached subscriber, not per
  // request (docs/ARCHITECTURE.md "Key store").
  const tokens::TokenProfile& profile = token_.profile();
  keys_.keep_children(
      tokens::IdentityKind::subscriber,
      [&profile](hsm::Session& session, CK_OBJECT_HANDLE root, std::string_view identity) {
        return token_steps::subscriber_keys(session, profile, root, identity);
      });
}

KeyResponse TokenKeyRequestService::handle(const KeyRequest& request,
                                           const RequestContext& context) {
  bool authenticated = false;  // both envelopes opened under their subscribers' keys
  try {
    try {
      return process(request, context, authenticated);
    } catch (...) {
      rethrow_as_protocol_error(false);
    }
  } catch (const ProtocolError& error) {
    audit_refusal(audit_, error,
                  {{"operation", "key_request"},
                   {"chair", request.chair_id.substr(0, protocol::kMaxIdentitySize)},
                   {"member", request.responder_id.substr(0, protocol::kMaxIdentitySize)},
                   {"peer", context.peer},
                   {"request_id", context.request_id}},
                  authenticated);
    throw;
  }
}

KeyResponse TokenKeyRequestService::process(const KeyRequest& request,
                                            const RequestContext& context, bool& authenticated) {
  const std::int64_t now = config_.now();
  check_identity(request.chair_id, "chair identity");
  check_identity(request.responder_id, "responder identity");
  if (request.chair_id == request.responder_id) {
    throw ProtocolError(ErrorCode::invalid_identity, "a chair cannot invite itself");
  }

  // Each envelope's size must be the one its plain IDs imply (before any cryptography).
  const protocol::Envelope chair =
      protocol::parse_envelope(request.chair_envelope, request.chair_id, request.responder_id);
  const protocol::Envelope responder =
      protocol::parse_envelope(request.responder_envelope, request.chair_id, request.responder_id);
  if (chair.type != MessageType::chair_invite) {
    throw ProtocolError(ErrorCode::unknown_message_type, "chair envelope is not of type 0x01");
  }
  if (responder.type != MessageType::responder_request) {
    throw ProtocolError(ErrorCode::unknown_message_type, "responder envelope is not of type 0x02");
  }
  const tokens::TokenProfile& profile = token_.profile();
  if (chair.profile != profile.wire_id() || responder.profile != profile.wire_id()) {
    throw ProtocolError(ErrorCode::profile_mismatch,
                        "this KMS uses profile " + std::to_string(profile.wire_id()));
  }
  if (!protocol::supported_suite(chair.suite) || !protocol::supported_suite(responder.suite)) {
    throw ProtocolError(ErrorCode::unsupported_suite, "suite " + std::to_string(chair.suite) + "/" +
                                                          std::to_string(responder.suite));
  }
  if (chair.suite != responder.suite) {
    throw ProtocolError(ErrorCode::suite_mismatch, "chair and responder envelopes differ");
  }
  const std::uint8_t suite = chair.suite;
  check_fresh(chair.timestamp, now, config_.freshness_window_seconds, "chair");
  check_fresh(responder.timestamp, now, config_.freshness_window_seconds, "responder");

  // A replay of an envelope this node admitted lately is refused here, before any token call
  // (the registry's memory; docs/ARCHITECTURE.md "Cheap refusals"). Not authenticated yet:
  // audited as such, at a bounded cost.
  const Bytes request_digest = protocol::request_digest(request);
  const Bytes chair_digest = protocol::envelope_digest(request.chair_envelope);
  const Bytes responder_digest = protocol::envelope_digest(request.responder_envelope);
  for (const Bytes* digest : {&chair_digest, &responder_digest}) {
    if (const std::optional<Bytes> used_by = registry_.recent_envelope_use(*digest);
        used_by && *used_by != request_digest) {
      throw ProtocolError(ErrorCode::replay, "envelope already used in another request");
    }
  }

  const Bytes chair_aad = protocol::envelope_aad(chair, request.chair_id, request.responder_id);
  const Bytes responder_aad =
      protocol::envelope_aad(responder, request.chair_id, request.responder_id);

  // Unknown, revoked and stale-version subscribers are refused here, before any token call
  // (a database lookup; a cached subscriber's keys need none either).
  tokens::ResolvedKey chair_key = keys_.resolve(tokens::IdentityKind::subscriber, request.chair_id);
  tokens::ResolvedKey responder_key =
      keys_.resolve(tokens::IdentityKind::subscriber, request.responder_id);
  check_version(chair.key_version, chair_key.key_version, "chair");
  check_version(responder.key_version, responder_key.key_version, "responder");

  bool rerun = false;
  Computed computed = token_.pool().run([&](hsm::Session& session) {
    const bool after_recovery = std::exchange(rerun, true);
    if (after_recovery || !chair_key.current() || !responder_key.current()) {
      // Run again after a recovery, or the token's session objects were renewed since (a
      // recycle): the handles may be gone or name other objects now. Resolve afresh.
      if (after_recovery) {
        // A handle loss (CKR_OBJECT_HANDLE_INVALID) leaves the session-object generation as
        // it was: the cached keys themselves may be what was lost, so they are not trusted
        // again but unwrapped anew.
        keys_.forget(tokens::IdentityKind::subscriber, request.chair_id);
        keys_.forget(tokens::IdentityKind::subscriber, request.responder_id);
      }
      chair_key = keys_.resolve(tokens::IdentityKind::subscriber, request.chair_id);
      responder_key = keys_.resolve(tokens::IdentityKind::subscriber, request.responder_id);
      check_version(chair.key_version, chair_key.key_version, "chair");
      check_version(responder.key_version, responder_key.key_version, "responder");
    }
    protocol::EnvelopePlaintext chair_plain = protocol::parse_envelope_plaintext(
        token_steps::open_envelope(session, profile, chair_key.child(token_steps::kEnvelopeKey),
                                   chair.iv, chair_aad, chair.sealed, "chair")
            .view());
    protocol::EnvelopePlaintext responder_plain = protocol::parse_envelope_plaintext(
        token_steps::open_envelope(session, profile, responder_key.child(token_steps::kEnvelopeKey),
                                   responder.iv, responder_aad, responder.sealed, "responder")
            .view());
    authenticated = true;
    for (const auto* plain : {&chair_plain, &responder_plain}) {
      if (plain->chair_id != request.chair_id || plain->responder_id != request.responder_id) {
        throw ProtocolError(ErrorCode::identity_mismatch,
                            std::string(plain == &chair_plain ? "chair" : "responder") +
                                " envelope encrypts other identities than the plain ones");
      }
    }

    Computed out;
    out.conference_id = protocol::conference_id(request.chair_id, chair_plain.nonce.view());
    out.chair_key_id =
        protocol::key_id(out.conference_id, request.chair_id, chair_plain.nonce.view());
    out.responder_key_id =
        protocol::key_id(out.conference_id, request.responder_id, responder_plain.nonce.view());

    // K1 is the same for every invitation of the conference, and each K is wanted again by
    // the bridge's release: both kept (token_steps::media_key).
    const std::shared_ptr<const tokens::StoredKey> master = keys_.master(session);
    {
      const token_steps::MediaKey chair_media = token_steps::media_key(
          keys_, session, profile, master->handle(), "media-chair",
          protocol::chair_media_context(request.chair_id, chair_plain.nonce.view(), suite).view());
      out.chair_response =
          make_response(session, profile, chair_key.child(token_steps::kResponseKey),
                        chair_media.handle(), MessageType::chair_response, out.conference_id,
                        request, chair_plain.nonce, out.chair_key_id, suite);
    }
    {
      const token_steps::MediaKey responder_media = token_steps::media_key(
          keys_, session, profile, master->handle(), "media-member",
          protocol::member_media_context(out.conference_id, request.responder_id,
                                         responder_plain.nonce.view(), suite)
              .view());
      out.responder_response = make_response(
          session, profile, responder_key.child(token_steps::kResponseKey),
          responder_media.handle(), MessageType::responder_response, out.conference_id, request,
          responder_plain.nonce, out.responder_key_id, suite);
    }
    out.chair_nonce = std::move(chair_plain.nonce);
    out.responder_nonce = std::move(responder_plain.nonce);
    return out;
  });

  Admission admission;
  admission.conference_id = computed.conference_id;
  admission.chair_id = request.chair_id;
  admission.chair_nonce = computed.chair_nonce;
  admission.chair_key_id = computed.chair_key_id;
  admission.responder_id = request.responder_id;
  admission.responder_nonce = computed.responder_nonce;
  admission.responder_key_id = computed.responder_key_id;
  admission.profile = profile.wire_id();
  admission.suite = suite;
  admission.request_digest = request_digest;
  admission.envelopes[0] = {
      chair_digest, static_cast<std::int64_t>(chair.timestamp) + config_.freshness_window_seconds};
  admission.envelopes[1] = {responder_digest, static_cast<std::int64_t>(responder.timestamp) +
                                                  config_.freshness_window_seconds};
  admission.now = now;
  admission.conference_expires_at = now + config_.conference_lifetime_seconds;

  const auto audit_admission = [&](AdmissionOutcome outcome) {
    AuditEvent event{outcome == AdmissionOutcome::admitted ? "admission" : "retransmission",
                     "ok",
                     {{"conference", to_hex(computed.conference_id)},
                      {"chair", request.chair_id},
                      {"member", request.responder_id},
                      {"chair_key_id", to_hex(computed.chair_key_id)},
                      {"member_key_id", to_hex(computed.responder_key_id)},
                      {"suite", std::to_string(suite)},
                      {"peer", context.peer},
                      {"request_id", context.request_id}}};
    // Durable once the registry syncs the audit, before it commits (one sync shared by
    // concurrent admissions). AuditUnavailable here or there: nothing is admitted or released.
    audit_.append(event);
  };
  registry_.admit(admission, audit_admission, &audit_);

  KeyResponse response;
  response.conference_id = std::move(computed.conference_id);
  response.chair_response = std::move(computed.chair_response);
  response.responder_response = std::move(computed.responder_response);
  return response;
}

}  // namespace kms
