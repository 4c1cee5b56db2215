#include "handlers.h"
#include "kms/hex.h"
#include "kms/server/tls.h"
#include "kms/server/wire.h"

namespace kms::server::handlers {
namespace {

constexpr std::string_view kPath = "/v1/bridge/keys";

// Refused before the service sees it (no valid bridge certificate): this handler audits
// the refusal itself. Nothing authenticated the request (that is the refusal): anyone can
// send any number, so its audit cost is bounded (AuditSink::unauthenticated_refusal).
Reply refuse(const BridgePeer& peer, const RequestContext& context, const std::string& body,
             AuditSink& audit, Logger& logger) {
  AuditEvent refusal{"refusal",
                     "bridge_not_authorized",
                     {{"endpoint", std::string(kPath)},
                      {"peer", context.peer},
                      {"request_id", context.request_id},
                      {"reason", peer.problem},
                      {"cert_subject", peer.subject},
                      {"cert_issuer", peer.issuer}}};
  try {  // name the conference asked for, when the body says
    refusal.fields["conference"] = to_hex(wire::bridge_request_from_json(body).conference_id);
  } catch (const ProtocolError&) {
  }
  try {
    audit.unauthenticated_refusal(refusal, context.peer);
  } catch (const AuditUnavailable& error) {
    logger.error("audit log unavailable for a refusal",
                 {{"id", context.request_id}, {"error", error.what()}});
  }
  return error_reply(403, "bridge_not_authorized",
                     "mutual TLS required with a bridge certificate: " + peer.problem);
}

}  // namespace

Handler bridge_keys(BridgeService& service, AuditSink& audit, Logger& logger) {
  return [&service, &audit, &logger](Exchange& exchange) -> Answer {
    BridgePeer peer = check_bridge_peer(exchange.tls);
    exchange.bridge = peer.identity;
    if (!peer.authenticated) {
      return WorkerJob(
          [&audit, &logger, peer = std::move(peer), context = exchange.context,
           body = std::move(exchange.body)] { return refuse(peer, context, body, audit, logger); });
    }
    return WorkerJob([&service, body = std::move(exchange.body), context = exchange.context,
                      identity = std::move(peer.identity)] {
      const wire::BridgeKeyRequest request = wire::bridge_request_from_json(body);
      const BridgeRelease release =
          service.release(identity, request.conference_id, context, request.bridge_key_version);
      return Reply{200, "application/json", wire::bridge_release_to_json(release)};
    });
  };
}

}  // namespace kms::server::handlers
