// The conference registry: which members were admitted to which conference with which
// nonces (so keys can be re-derived in the token at release), the bridge binding, expiry,
// and the replay record of used envelopes. Never any key material.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "hsm/secure_bytes.h"
#include "kms/audit.h"
#include "kms/services.h"

namespace kms {

struct ConferenceMember {
  std::string member_id;
  std::uint8_t role = 2;   // 1 chair, 2 member
  hsm::SecureBytes nonce;  // R_A for the chair, R_N for a member
  Bytes key_id;            // 8 bytes
  std::int64_t admitted_at = 0;
};

struct Conference {
  Bytes conference_id;  // 16 bytes
  std::string chair_id;
  std::uint8_t profile = 0;
  std::uint8_t suite = 0;
  std::int64_t created_at = 0;
  std::int64_t expires_at = 0;
  std::optional<std::string> bridge_id;   // bound bridge, once a bridge fetched the keys
  std::vector<ConferenceMember> members;  // the chair first, then members by admission
};

// One envelope's entry in the replay record.
struct EnvelopeUse {
  Bytes digest;                 // SHA-256 of the envelope bytes
  std::int64_t expires_at = 0;  // envelope timestamp + freshness window
};

// What the key-request service asks the registry to record for one request.
struct Admission {
  Bytes conference_id;
  std::string chair_id;
  hsm::SecureBytes chair_nonce;
  Bytes chair_key_id;
  std::string responder_id;
  hsm::SecureBytes responder_nonce;
  Bytes responder_key_id;
  std::uint8_t profile = 0;
  std::uint8_t suite = 0;
  Bytes request_digest;                  // protocol::request_digest
  std::array<EnvelopeUse, 2> envelopes;  // chair's, responder's
  std::int64_t now = 0;
  std::int64_t conference_expires_at = 0;  // used when the conference is created
};

enum class AdmissionOutcome {
  admitted,        // first time: the responder is now a member (replacing an earlier entry)
  retransmission,  // the identical request was admitted before: nothing changes
};

class ConferenceRegistry {
 public:
  virtual ~ConferenceRegistry() = default;

  // Atomically: checks the replay record (an envelope used by a different request throws
  // ProtocolError(replay)), the conference's state (conference_expired, suite_mismatch,
  // profile_mismatch against an existing conference), the replay record's capacity
  // (overloaded), then records the admission and calls before_commit with the outcome.
  // If before_commit throws (the audit failed), nothing is recorded and the exception
  // propagates. Returns the outcome once the admission is durable.
  //
  // audit: when given, before_commit may only append() its audit records; the registry
  // calls audit->sync() before it commits, and if that throws nothing is recorded and the
  // exception propagates. This lets concurrent admissions share one durable write (group
  // commit). Without it before_commit must make its records durable itself (record()).
  // before_commit may run on another caller's thread (while this caller waits).
  using AdmissionHook = std::function<void(AdmissionOutcome)>;
  virtual AdmissionOutcome admit(const Admission& admission, const AdmissionHook& before_commit,
                                 AuditSink* audit = nullptr) = 0;

  virtual std::optional<Conference> find(const Bytes& conference_id) = 0;

  // Atomically: unknown_conference, conference_expired (expires_at <= now), or
  // bridge_not_authorized when bound to another bridge; binds an unbound conference to
  // bridge_id; calls before_commit with the conference (members included). If it throws,
  // the binding is rolled back and the exception propagates. audit: as for admit().
  using ReleaseHook = std::function<void(const Conference&)>;
  virtual Conference bind_for_release(const Bytes& conference_id, const std::string& bridge_id,
                                      std::int64_t now, const ReleaseHook& before_commit,
                                      AuditSink* audit = nullptr) = 0;

  // Deletes conferences (and their members) expired before now - retention, and replay
  // entries whose window has passed. Returns the number of conferences deleted.
  virtual std::size_t purge_expired(std::int64_t now) = 0;

  // The request digest that used this envelope, if the registry remembers it without a
  // database read (kms/core/recent_envelopes.h): a replay refused before any token work.
  // nullopt proves nothing; admit() decides.
  virtual std::optional<Bytes> recent_envelope_use(const Bytes& envelope_digest) const {
    (void)envelope_digest;
    return std::nullopt;
  }
};

}  // namespace kms
