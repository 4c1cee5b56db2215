// The audit log interface the domain writes to. The default implementation is the
// hash-chained JSON-lines file (kms/audit/). Never any key bytes or nonces in a record.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace kms {

struct AuditEvent {
  std::string event;    // "admission", "key_release", "refusal", "retransmission", ...
  std::string outcome;  // "ok" or an error code name
  std::map<std::string, std::string> fields;  // conference (hex), chair, member, bridge, peer, ...
};

// The last record a sink has made durable: its seq and its hash (hex SHA-256). The
// registry stores it in the same COMMIT as the batch it audited (table audit_anchor), so
// `kms-audit verify FILE --anchor-db DB` detects a log cut at a record boundary.
struct AuditHead {
  std::uint64_t seq = 0;
  std::string hash;
};

class AuditUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Durable before it returns (written and flushed); throws AuditUnavailable otherwise,
  // and the caller must then release nothing (fail closed).
  virtual void record(const AuditEvent& event) = 0;

  // Group commit (several callers share one durable write). append() writes the event
  // without waiting for it to be durable; sync() makes every event appended so far durable.
  // Both throw AuditUnavailable; when sync() throws, every event appended since the last
  // successful sync() must be treated as not durable (release nothing for it). The defaults
  // keep every sink correct: append() is record() (durable at once), sync() has nothing left.
  virtual void append(const AuditEvent& event) { record(event); }
  virtual void sync() {}
  // The head as of the last successful sync() or record(); nullopt when the sink keeps no
  // chain (then nothing is anchored).
  virtual std::optional<AuditHead> head() const { return std::nullopt; }

  // A refusal of a request that nothing has authenticated yet (no envelope opened, no
  // bridge certificate verified): anyone can send any number of those, so a sink may bound
  // their cost, e.g. kms::audit::RefusalSummarizer (one record per interval per source
  // address and error code, the rest counted into a summary record; no sync of their own).
  // `peer` is RequestContext::peer ("address:port"). A refusal releases nothing, so this
  // is best effort; the default records the event like any other (and may throw like
  // record()).
  virtual void unauthenticated_refusal(const AuditEvent& event, const std::string& peer) {
    (void)peer;
    record(event);
  }
};

}  // namespace kms
