// The audit log interface the domain writes to. The default implementation is the
// hash-chained JSON-lines file (kms/audit/). Never any key bytes or nonces in a record.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

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

// One record as the sink wrote it (the line without its newline), for the registry's
// journal (table audit_journal): a sink that journals is durable once the batch's COMMIT is,
// before its own file is synced.
struct AuditJournalLine {
  std::uint64_t seq = 0;
  std::string hash;  // hex SHA-256 of the record, as in the line
  std::string line;
};

// What a batch stores with its COMMIT instead of waiting for the sink's own sync: every
// record the sink holds that is neither synced by the sink nor journaled by an earlier
// committed batch (contiguous, in seq order), the anchor (the last of them, or the durable
// head if none), and how far the sink's own file is durable (journal rows up to there are
// not needed any more and are deleted in the same transaction).
struct AuditJournal {
  std::string log;  // the chain's name in the journal (AuditSink::journal_log())
  std::vector<AuditJournalLine> lines;
  AuditHead head;
  std::uint64_t synced_seq = 0;
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

  // One durable write per batch (a sink that journals, kms::audit::AuditLog with a
  // sync_interval): instead of sync() the registry takes the journal, stores it in the
  // batch's transaction and reports a successful COMMIT with journal_committed(); the sink
  // syncs its own file later, off the request path. nullopt: the sink does not journal, the
  // registry calls sync() before COMMIT. Throws AuditUnavailable like sync() (then nothing of
  // the batch is committed).
  virtual std::optional<AuditJournal> prepare_journal() { return std::nullopt; }
  // The name of this sink's chain in the journal (kms::audit::AuditLog: its file's absolute
  // path), so that two logs that share a database and a node name never mix their rows;
  // empty for a sink that journals nothing.
  virtual std::string journal_log() const { return {}; }
  virtual void journal_committed(const AuditJournal& journal) { (void)journal; }
  // At start: the journal rows the registry holds for this sink's chain (seq order). The sink
  // appends those its file lacks (they must continue its chain) and makes them durable;
  // returns the seq through which its file is durable (rows up to there may be deleted), 0
  // to keep every row. Throws AuditUnavailable if the rows do not continue the file's chain.
  virtual std::uint64_t restore_from_journal(const std::vector<AuditJournalLine>& rows) {
    (void)rows;
    return 0;
  }

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
