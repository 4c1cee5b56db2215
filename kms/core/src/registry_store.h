// The conference registry's storage interface (private to kms_core): one node's view of the
// tables, used by StoredConferenceRegistry, which adds the rules (admission_rules.h) and the
// group commit. Two implementations: SQLite (sqlite_registry_store.cpp) and PostgreSQL
// (postgres_registry_store.cpp). Storage failures are storage::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kms/core/conference_registry.h"
#include "kms/core/stored_conference_registry.h"

namespace kms {

// One open transaction: a group commit's batch. Each write of the batch runs between
// begin_write() and keep_write() / undo_write() (a savepoint).
class RegistryBatch {
 public:
  virtual ~RegistryBatch() = default;  // rolls back unless committed
  virtual void begin_write() = 0;
  virtual void keep_write() = 0;
  virtual void undo_write() = 0;

  // The conference with its members, locked until the batch ends (PostgreSQL: FOR UPDATE,
  // so admissions and bindings of one conference on several nodes run one after another).
  virtual std::optional<Conference> lock_conference(const Bytes& conference_id) = 0;
  // The request digest an envelope was used by, if any (committed by any node, or earlier
  // in this batch).
  virtual std::optional<Bytes> envelope_used_by(const Bytes& digest) = 0;
  // Deletes replay entries whose window has passed (some of them); returns how many.
  virtual std::size_t expire_envelopes(std::int64_t now) = 0;

  // Insert conflicts with a concurrent node (the same conference or envelope) throw
  // storage::Error(duplicate) once that node commits: the write is then applied again.
  virtual void insert_conference(const Admission& admission) = 0;
  virtual void upsert_member(const Admission& admission) = 0;
  virtual void insert_envelope(const EnvelopeUse& use, const Bytes& request_digest) = 0;
  // False if the conference was bound meanwhile.
  virtual bool bind_bridge(const Bytes& conference_id, const std::string& bridge_id,
                           std::int64_t now) = 0;
  virtual void store_audit_anchor(const AuditHead& head, std::int64_t now) = 0;
  // This node's audit journal (rows of journal.log): inserts the lines (a line already
  // there, from a COMMIT whose outcome was lost, is the same line: kept) and deletes the
  // rows the log's file has synced (seq <= journal.synced_seq).
  virtual void store_audit_journal(const AuditJournal& journal) = 0;
  virtual void commit() = 0;
};

class RegistryStore {
 public:
  virtual ~RegistryStore() = default;
  virtual std::unique_ptr<RegistryBatch> begin_batch() = 0;
  virtual std::optional<Conference> find(const Bytes& conference_id) = 0;
  // In its own transaction: conferences (and members) that expired at or before
  // `conference_cutoff`, replay entries that expired before `envelope_cutoff`.
  struct Purged {
    std::size_t conferences = 0;
    std::size_t envelopes = 0;
  };
  virtual Purged purge(std::int64_t conference_cutoff, std::int64_t envelope_cutoff) = 0;
  virtual std::size_t count_envelopes() = 0;
  // This node's audit journal rows of one log, in seq order; deleting those up to `through`.
  virtual std::vector<AuditJournalLine> read_audit_journal(const std::string& log) = 0;
  virtual void prune_audit_journal(const std::string& log, std::uint64_t through) = 0;
  virtual std::string describe() const = 0;  // the path or URL, for messages
  virtual RegistryCheckpointStats checkpoint_stats() const { return {}; }
};

std::unique_ptr<RegistryStore> open_sqlite_registry_store(const std::string& path,
                                                          const RegistryOptions& options);
std::unique_ptr<RegistryStore> open_postgres_registry_store(const std::string& url,
                                                            const RegistryOptions& options);

}  // namespace kms
