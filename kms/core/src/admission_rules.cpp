#include "admission_rules.h"

namespace kms::rules {

bool envelope_seen_before(const Bytes& used_by, const Admission& admission) {
  if (used_by != admission.request_digest) {
    throw ProtocolError(ErrorCode::replay, "envelope already used in another request");
  }
  return true;
}

AdmissionStep admission_step(const Admission& admission, const std::optional<Conference>& existing,
                             bool seen_before, std::size_t replay_entries,
                             std::size_t replay_capacity) {
  if (existing) {
    if (existing->expires_at <= admission.now) {
      throw ProtocolError(ErrorCode::conference_expired, "conference expired");
    }
    if (existing->chair_id != admission.chair_id) {
      throw ProtocolError(ErrorCode::internal_error, "conference id collision");
    }
    if (existing->profile != admission.profile) {
      throw ProtocolError(ErrorCode::profile_mismatch, "conference was created with profile " +
                                                           std::to_string(existing->profile));
    }
    if (existing->suite != admission.suite) {
      throw ProtocolError(ErrorCode::suite_mismatch,
                          "conference was created with suite " + std::to_string(existing->suite));
    }
  } else if (seen_before) {
    throw ProtocolError(ErrorCode::conference_expired, "conference no longer exists");
  }
  if (seen_before) return AdmissionStep::retransmission;
  if (replay_entries + admission.envelopes.size() > replay_capacity) {
    throw ProtocolError(ErrorCode::overloaded, "replay record full");
  }
  return existing ? AdmissionStep::add_member : AdmissionStep::create_conference;
}

bool release_binds(const std::optional<Conference>& conference, const std::string& bridge_id,
                   std::int64_t now) {
  if (!conference) throw ProtocolError(ErrorCode::unknown_conference, "no such conference");
  if (conference->expires_at <= now) {
    throw ProtocolError(ErrorCode::conference_expired, "conference expired");
  }
  if (conference->bridge_id && *conference->bridge_id != bridge_id) {
    throw ProtocolError(ErrorCode::bridge_not_authorized, "conference is bound to another bridge");
  }
  return !conference->bridge_id;
}

}  // namespace kms::rules
