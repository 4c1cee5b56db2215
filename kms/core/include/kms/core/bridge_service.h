// Figure 20 of the seed: a provisioned bridge fetches the media keys of every admitted
// member, each wrapped in the token under a key derived from the bridge's root key
// (docs/PROTOCOL.md "Bridge key release", "Bridge binding").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kms/audit.h"
#include "kms/core/conference_registry.h"
#include "kms/core/service_config.h"
#include "kms/services.h"
#include "tokens/key_store.h"
#include "tokens/token_context.h"

namespace kms {

class TokenBridgeService : public BridgeService {
 public:
  TokenBridgeService(tokens::TokenContext& token, tokens::KeyStore& keys,
                     ConferenceRegistry& registry, AuditSink& audit, ServiceConfig config = {});

  // bridge_id: the identity from the bridge's client certificate, as provisioned
  // (kms-provision bridge add). Throws ProtocolError; every release and refusal is audited;
  // if the release can't be audited nothing is released (audit_unavailable) and the
  // binding is not recorded. The keys are wrapped outside the registry's commit; the commit
  // re-checks the conference is unchanged (else the release is redone, at most 3 times, then
  // overloaded), so a member admitted meanwhile is never silently left out.
  // expected_key_version (the bridge key version the bridge holds, if it says): another
  // current version is refused with key_version_mismatch before any conference is read.
  // The release carries the version the items are wrapped under.
  BridgeRelease release(const std::string& bridge_id, const Bytes& conference_id,
                        const RequestContext& context,
                        std::optional<std::uint32_t> expected_key_version) override;
  using BridgeService::release;

 private:
  BridgeRelease process(const std::string& bridge_id, const Bytes& conference_id,
                        const RequestContext& context,
                        std::optional<std::uint32_t> expected_key_version);
  void check_releasable(const std::optional<Conference>& conference, const std::string& bridge_id,
                        std::int64_t now) const;
  // Each member's media key wrapped for the bridge, in the token (no registry lock held),
  // and the bridge key version they are wrapped under.
  std::pair<std::vector<ReleasedKey>, std::uint32_t> wrap_member_keys(
      const Conference& conference, const std::string& bridge_id,
      std::optional<std::uint32_t> expected_key_version);
  tokens::TokenContext& token_;
  tokens::KeyStore& keys_;
  ConferenceRegistry& registry_;
  AuditSink& audit_;
  ServiceConfig config_;
};

}  // namespace kms
