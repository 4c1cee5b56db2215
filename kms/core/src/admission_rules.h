// The registry's rules, apart from any storage: what an admission or a release may do given
// what the registry holds. Pure functions; they throw ProtocolError with the refusal's code.
// Both registry backends (SQLite, PostgreSQL) run them inside their transaction, after
// locking the conference, so they decide on the committed state of every node.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "kms/core/conference_registry.h"

namespace kms::rules {

// An envelope of the admission was used before, by the request with digest `used_by`: the
// same request again is a retransmission (true), another request a replay (throws).
bool envelope_seen_before(const Bytes& used_by, const Admission& admission);

enum class AdmissionStep {
  retransmission,     // the identical request was admitted before: record nothing
  create_conference,  // the first admission: the conference and its first member
  add_member,         // a member joins (or is admitted again, replacing its entry)
};

// The conference's state (conference_expired, the chair, profile_mismatch, suite_mismatch),
// then, for a new admission, the replay record's capacity (overloaded): `replay_entries`
// live entries now, room for `replay_capacity`.
AdmissionStep admission_step(const Admission& admission, const std::optional<Conference>& existing,
                             bool seen_before, std::size_t replay_entries,
                             std::size_t replay_capacity);

// unknown_conference, conference_expired, bridge_not_authorized (bound to another bridge).
// True when the conference is unbound and this bridge binds it.
bool release_binds(const std::optional<Conference>& conference, const std::string& bridge_id,
                   std::int64_t now);

}  // namespace kms::rules
