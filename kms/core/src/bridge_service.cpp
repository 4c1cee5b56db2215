#include "kms/core/bridge_service.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "kms/core/error_mapping.h"
#include "kms/core/protocol.h"
#include "kms/hex.h"
#include "token_steps.h"
#include "tokens/key_templates.h"

namespace kms {
namespace {

// K_N's derivation context from the registry's nonces (the chair's K1 from ID-A and R_A).
hsm::SecureBytes media_context(const Conference& conference, const ConferenceMember& member) {
  if (member.role == static_cast<std::uint8_t>(protocol::Role::chair)) {
    return protocol::chair_media_context(member.member_id, member.nonce.view(), conference.suite);
  }
  return protocol::member_media_context(conference.conference_id, member.member_id,
                                        member.nonce.view(), conference.suite);
}

// The bridge said which key version it holds: refuse another one before anything is
// wrapped under it (the bridge could not unwrap the items).
void check_bridge_key_version(std::optional<std::uint32_t> expected, std::uint32_t current) {
  if (expected && *expected != current) {
    throw ProtocolError(ErrorCode::key_version_mismatch,
                        "the bridge holds key version " + std::to_string(*expected) +
                            ", its current key version is " + std::to_string(current));
  }
}

std::string member_list(const Conference& conference) {
  std::string out;
  for (const ConferenceMember& member : conference.members) {
    if (!out.empty()) out += ',';
    out += member.member_id;
  }
  return out;
}

}  // namespace

TokenBridgeService::TokenBridgeService(tokens::TokenContext& token, tokens::KeyStore& keys,
                                       ConferenceRegistry& registry, AuditSink& audit,
                                       ServiceConfig config)
    : token_(token), keys_(keys), registry_(registry), audit_(audit), config_(std::move(config)) {}

BridgeRelease TokenBridgeService::release(const std::string& bridge_id, const Bytes& conference_id,
                                          const RequestContext& context,
                                          std::optional<std::uint32_t> expected_key_version) {
  try {
    try {
      return process(bridge_id, conference_id, context, expected_key_version);
    } catch (...) {
      rethrow_as_protocol_error(true);
    }
  } catch (const ProtocolError& error) {
    audit_refusal(audit_, error,
                  {{"operation", "key_release"},
                   {"bridge", bridge_id.substr(0, protocol::kMaxIdentitySize)},
                   {"conference", to_hex(conference_id).substr(0, 64)},
                   {"peer", context.peer},
                   {"request_id", context.request_id}},
                  /*authenticated=*/true);  // the server verified the bridge's certificate
    throw;
  }
}

namespace {

// Thrown by the commit hook when the conference is no longer the one the keys were wrapped
// for (a member was admitted or re-admitted meanwhile): the release is redone.
struct ConferenceChanged {};

constexpr int kReleaseAttempts = 3;

// Everything the released items depend on: profile, suite and each member's id, role,
// nonce and key id, in order.
bool same_release_inputs(const Conference& read, const Conference& now) {
  if (read.profile != now.profile || read.suite != now.suite ||
      read.members.size() != now.members.size()) {
    return false;
  }
  for (std::size_t i = 0; i < read.members.size(); ++i) {
    const ConferenceMember& a = read.members[i];
    const ConferenceMember& b = now.members[i];
    if (a.member_id != b.member_id || a.role != b.role || a.key_id != b.key_id ||
        !std::ranges::equal(a.nonce.view(), b.nonce.view())) {
      return false;
    }
  }
  return true;
}

}  // namespace

BridgeRelease TokenBridgeService::process(const std::string& bridge_id, const Bytes& conference_id,
                                          const RequestContext& context,
                                          std::optional<std::uint32_t> expected_key_version) {
  if (conference_id.size() != protocol::kConferenceIdSize) {
    throw ProtocolError(ErrorCode::malformed_request, "conference id must be 16 bytes");
  }
  if (bridge_id.empty()) {
    throw ProtocolError(ErrorCode::bridge_not_authorized, "no bridge identity");
  }
  const std::int64_t now = config_.now();

  // Provisioned and active, and holding the current key version if it says which it holds,
  // before the conference is looked at (and bound).
  token_.pool().run([&](hsm::Session&) {
    const tokens::ResolvedKey key = keys_.resolve(tokens::IdentityKind::bridge, bridge_id);
    check_bridge_key_version(expected_key_version, key.key_version);
    return 0;
  });

  // The token work runs outside the registry's commit (where it would hold up every
  // admission batched with this release); the commit hook only re-checks that the
  // conference is still the one the keys were wrapped for, and appends the audit record.
  for (int attempt = 0; attempt < kReleaseAttempts; ++attempt) {
    const std::optional<Conference> conference = registry_.find(conference_id);
    check_releasable(conference, bridge_id, now);
    BridgeRelease release;
    release.conference_id = conference->conference_id;
    release.profile = conference->profile;
    release.expires_at = conference->expires_at;
    std::tie(release.keys, release.bridge_key_version) =
        wrap_member_keys(*conference, bridge_id, expected_key_version);
    std::string key_ids;
    for (const ReleasedKey& key : release.keys) {
      if (!key_ids.empty()) key_ids += ',';
      key_ids += to_hex(key.key_id);
    }
    const auto recheck_and_audit = [&](const Conference& current) {
      if (!same_release_inputs(*conference, current)) throw ConferenceChanged{};
      // Durable once the registry syncs the audit, before the binding commits and before
      // anything is returned. AuditUnavailable here or there: nothing released, no binding.
      audit_.append(AuditEvent{"key_release",
                               "ok",
                               {{"conference", to_hex(current.conference_id)},
                                {"bridge", bridge_id},
                                {"members", member_list(current)},
                                {"key_ids", key_ids},
                                {"count", std::to_string(release.keys.size())},
                                {"bridge_key_version", std::to_string(release.bridge_key_version)},
                                {"peer", context.peer},
                                {"request_id", context.request_id}}});
    };
    try {
      const Conference bound =
          registry_.bind_for_release(conference_id, bridge_id, now, recheck_and_audit, &audit_);
      release.expires_at = bound.expires_at;
      return release;
    } catch (const ConferenceChanged&) {
      // Admitted meanwhile: nothing bound or audited; wrap again for the new member set.
    }
  }
  throw ProtocolError(ErrorCode::overloaded, "conference changed during each of " +
                                                 std::to_string(kReleaseAttempts) +
                                                 " release attempts");
}

// The registry re-checks unknown/expired/bound inside its transaction; checked here first so
// no token work is done for a release that is refused anyway (same codes, same order).
void TokenBridgeService::check_releasable(const std::optional<Conference>& conference,
                                          const std::string& bridge_id, std::int64_t now) const {
  if (!conference) throw ProtocolError(ErrorCode::unknown_conference, "no such conference");
  if (conference->expires_at <= now) {
    throw ProtocolError(ErrorCode::conference_expired, "conference expired");
  }
  if (conference->bridge_id && *conference->bridge_id != bridge_id) {
    throw ProtocolError(ErrorCode::bridge_not_authorized, "conference is bound to another bridge");
  }
  if (conference->profile != token_.profile().wire_id()) {
    throw ProtocolError(ErrorCode::profile_mismatch, "conference was created under profile " +
                                                         std::to_string(conference->profile));
  }
}

std::pair<std::vector<ReleasedKey>, std::uint32_t> TokenBridgeService::wrap_member_keys(
    const Conference& conference, const std::string& bridge_id,
    std::optional<std::uint32_t> expected_key_version) {
  const tokens::TokenProfile& profile = token_.profile();
  bool rerun = false;
  return token_.pool().run([&](hsm::Session& session) {
    // Run again after a recovery: the cached bridge key may be what was lost (a handle loss
    // leaves the session-object generation as it was), so it is unwrapped anew.
    if (std::exchange(rerun, true)) keys_.forget(tokens::IdentityKind::bridge, bridge_id);
    // Resolved again: a rotation since the check above shows here, never as items wrapped
    // under one version and labelled with another.
    const tokens::ResolvedKey bridge_key = keys_.resolve(tokens::IdentityKind::bridge, bridge_id);
    check_bridge_key_version(expected_key_version, bridge_key.key_version);
    const std::shared_ptr<const tokens::StoredKey> master = keys_.master(session);
    std::vector<ReleasedKey> keys;
    for (const ConferenceMember& member : conference.members) {
      // Kept since the member's admission, unless evicted or lost with a recycle meanwhile.
      const token_steps::MediaKey media =
          token_steps::media_key(keys_, session, profile, master->handle(),
                                 member.role == 1 ? "media-chair" : "media-member",
                                 media_context(conference, member).view());
      const Bytes wrap_context = protocol::bridge_wrap_context(
          bridge_id, conference.conference_id, member.member_id,
          static_cast<protocol::Role>(member.role), member.key_id, conference.suite);
      hsm::ObjectGuard wrap_key =
          token_steps::derive(session, profile, bridge_key.handle(), "bridge-wrap", wrap_context,
                              tokens::templates::bridge_wrap_key());
      ReleasedKey item;
      item.member_id = member.member_id;
      item.role = member.role;
      item.key_id = member.key_id;
      item.suite = conference.suite;
      item.wrapped = token_steps::wrap(session, profile, wrap_key.get(), media.handle());
      keys.push_back(std::move(item));
    }
    return std::make_pair(std::move(keys), bridge_key.key_version);
  });
}

}  // namespace kms
