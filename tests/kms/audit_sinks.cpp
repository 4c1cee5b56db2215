#include "audit_sinks.h"

namespace kmstest {

void RecordingAuditSink::record(const kms::AuditEvent& event) {
  std::lock_guard lock(mutex_);
  if (fail_) throw kms::AuditUnavailable("test audit sink is failing");
  events_.push_back(event);
}

std::vector<kms::AuditEvent> RecordingAuditSink::events() const {
  std::lock_guard lock(mutex_);
  return events_;
}

std::size_t RecordingAuditSink::count(const std::string& event, const std::string& outcome) const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& e : events_) {
    if (e.event == event && (outcome.empty() || e.outcome == outcome)) ++n;
  }
  return n;
}

void RecordingAuditSink::fail_from_now_on(bool fail) {
  std::lock_guard lock(mutex_);
  fail_ = fail;
}

}  // namespace kmstest
