// A registry that forwards to the real SQLite registry and lets a test act at the points a
// concurrent caller could: after a find() (before the bridge service's commit) and around
// the commit hook of bind_for_release(). Used to interleave an admission with a release
// deterministically, and to see what a release does inside the registry's commit.
#pragma once

#include <functional>

#include "kms/core/conference_registry.h"

namespace kmstest {

class InterleavingRegistry : public kms::ConferenceRegistry {
 public:
  explicit InterleavingRegistry(kms::ConferenceRegistry& inner) : inner_(inner) {}

  // Runs after each find() returned, with the number of finds so far (1, 2, ...).
  std::function<void(int)> after_find;
  // Run right before and right after the release hook, inside the registry's commit.
  std::function<void()> before_release_hook;
  std::function<void()> after_release_hook;
  int finds = 0;
  int release_hooks = 0;

  kms::AdmissionOutcome admit(const kms::Admission& admission, const AdmissionHook& before_commit,
                              kms::AuditSink* audit) override {
    return inner_.admit(admission, before_commit, audit);
  }

  std::optional<kms::Conference> find(const kms::Bytes& conference_id) override {
    std::optional<kms::Conference> conference = inner_.find(conference_id);
    ++finds;
    if (after_find) after_find(finds);
    return conference;
  }

  kms::Conference bind_for_release(const kms::Bytes& conference_id, const std::string& bridge_id,
                                   std::int64_t now, const ReleaseHook& before_commit,
                                   kms::AuditSink* audit) override {
    const ReleaseHook observed = [&](const kms::Conference& conference) {
      ++release_hooks;
      if (before_release_hook) before_release_hook();
      before_commit(conference);
      if (after_release_hook) after_release_hook();
    };
    return inner_.bind_for_release(conference_id, bridge_id, now, observed, audit);
  }

  std::size_t purge_expired(std::int64_t now) override { return inner_.purge_expired(now); }

 private:
  kms::ConferenceRegistry& inner_;
};

}  // namespace kmstest
