// The default conference registry on SQLite (WAL, synchronous=FULL: an admission is
// durable when admit() returns). The file may be shared with the key store's tables; this
// registry only touches the tables conferences, conference_members and used_envelopes.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "kms/core/conference_registry.h"

struct sqlite3;

namespace kms {

struct RegistryOptions {
  // Expired conferences stay this long (bridges get conference_expired rather than
  // unknown_conference), then purge_expired() deletes them.
  std::int64_t expired_retention_seconds = 3600;
  // Upper bound on live replay entries; beyond it admissions fail with overloaded rather
  // than forget an entry inside its window (which would reopen a replay).
  std::size_t replay_capacity = 1'000'000;
  int busy_timeout_ms = 5000;
  // true: synchronous=FULL, an admission survives power loss once admit() returns (one
  // fsync per admission bounds throughput by the disk's fsync latency). false:
  // synchronous=NORMAL, survives a process crash but the last admissions may be lost on
  // power loss (then their envelopes could be replayed within their window).
  bool sync_every_commit = true;
  // admit() also purges expired conferences when this long has passed since the last
  // purge (0: only explicit purge_expired() calls).
  std::int64_t purge_interval_seconds = 60;
};

class SqliteConferenceRegistry : public ConferenceRegistry {
 public:
  // Opens or creates the database file and the registry's tables. Throws
  // ProtocolError(internal_error) if the database can't be opened.
  explicit SqliteConferenceRegistry(std::string path, RegistryOptions options = {});
  ~SqliteConferenceRegistry() override;
  SqliteConferenceRegistry(const SqliteConferenceRegistry&) = delete;
  SqliteConferenceRegistry& operator=(const SqliteConferenceRegistry&) = delete;

  AdmissionOutcome admit(const Admission& admission, const AdmissionHook& before_commit) override;
  std::optional<Conference> find(const Bytes& conference_id) override;
  Conference bind_for_release(const Bytes& conference_id, const std::string& bridge_id,
                              std::int64_t now, const ReleaseHook& before_commit) override;
  std::size_t purge_expired(std::int64_t now) override;

  // Live replay entries (for metrics and tests).
  std::size_t replay_entries();
  const std::string& path() const noexcept { return path_; }

 private:
  std::optional<Conference> load(const Bytes& conference_id);  // caller holds mutex_
  std::size_t purge_locked(std::int64_t now);                  // caller holds mutex_
  void exec(const char* sql);
  std::string path_;
  RegistryOptions options_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::size_t replay_count_ = 0;
  std::int64_t next_purge_ = 0;
};

}  // namespace kms
