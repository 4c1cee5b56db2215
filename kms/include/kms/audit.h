// The audit log interface the domain writes to. The default implementation is the
// hash-chained JSON-lines file (kms/audit/). Never any key bytes or nonces in a record.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

namespace kms {

struct AuditEvent {
  std::string event;    // "admission", "key_release", "refusal", "retransmission", ...
  std::string outcome;  // "ok" or an error code name
  std::map<std::string, std::string> fields;  // conference (hex), chair, member, bridge, peer, ...
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
};

}  // namespace kms
