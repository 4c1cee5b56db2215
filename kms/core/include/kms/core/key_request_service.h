// Steps 4-6 / 11-13 of the seed, in the token (docs/PROTOCOL.md "Key request processing").
#pragma once

#include "kms/audit.h"
#include "kms/core/conference_registry.h"
#include "kms/core/service_config.h"
#include "kms/services.h"
#include "tokens/key_store.h"
#include "tokens/token_context.h"

namespace kms {

class TokenKeyRequestService : public KeyRequestService {
 public:
  // All references must outlive the service. Thread-safe: handle() may run concurrently.
  TokenKeyRequestService(tokens::TokenContext& token, tokens::KeyStore& keys,
                         ConferenceRegistry& registry, AuditSink& audit, ServiceConfig config = {});

  // Throws ProtocolError; nothing is admitted and nothing released when it throws.
  // Every admission and retransmission is audited before the response is returned
  // (audit failure: audit_unavailable); refusals are audited best effort, those before
  // both envelopes have opened through AuditSink::unauthenticated_refusal.
  KeyResponse handle(const KeyRequest& request, const RequestContext& context) override;

 private:
  // Sets `authenticated` once both envelopes have opened (a refusal after that is audited
  // as a record of its own).
  KeyResponse process(const KeyRequest& request, const RequestContext& context,
                      bool& authenticated);
  tokens::TokenContext& token_;
  tokens::KeyStore& keys_;
  ConferenceRegistry& registry_;
  AuditSink& audit_;
  ServiceConfig config_;
};

}  // namespace kms
