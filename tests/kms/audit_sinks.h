// Test-only audit sinks: one that records events in memory, one that always fails.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "kms/audit.h"

namespace kmstest {

class RecordingAuditSink : public kms::AuditSink {
 public:
  void record(const kms::AuditEvent& event) override;
  std::vector<kms::AuditEvent> events() const;
  std::size_t count(const std::string& event, const std::string& outcome = "") const;
  void fail_from_now_on(bool fail);  // throw AuditUnavailable (fail-closed tests)

 private:
  mutable std::mutex mutex_;
  std::vector<kms::AuditEvent> events_;
  bool fail_ = false;
};

}  // namespace kmstest
