#include "kms/core/sqlite_conference_registry.h"

#include <sqlite3.h>

#include <algorithm>

#include "sqlite_statement.h"
#include "tokens/key_database.h"

namespace kms {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS conferences (
  conference_id BLOB PRIMARY KEY,
  chair_id      TEXT NOT NULL,
  chair_nonce   BLOB NOT NULL,
  chair_key_id  BLOB NOT NULL,
  profile       INTEGER NOT NULL,
  suite         INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER NOT NULL,
  bridge_id     TEXT,
  bound_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conferences_by_expiry ON conferences(expires_at);
CREATE TABLE IF NOT EXISTS conference_members (
  conference_id BLOB NOT NULL,
  member_id     TEXT NOT NULL,
  nonce         BLOB NOT NULL,
  key_id        BLOB NOT NULL,
  admitted_at   INTEGER NOT NULL,
  seq           INTEGER NOT NULL,
  PRIMARY KEY (conference_id, member_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS used_envelopes (
  digest         BLOB PRIMARY KEY,
  request_digest BLOB NOT NULL,
  expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_envelopes_by_expiry ON used_envelopes(expires_at);
CREATE TABLE IF NOT EXISTS audit_anchor (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  seq        INTEGER NOT NULL,
  hash       TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
)sql";

// The audit log's durable head, written in the transaction of the batch it audited: the
// log can't then lose its last records unnoticed (kms-audit verify --anchor-db).
void store_audit_anchor(sqlite3* db, const AuditHead& head, std::int64_t now) {
  sqlite::Statement anchor(db,
                           "INSERT INTO audit_anchor (id, seq, hash, updated_at) "
                           "VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
                           "seq = excluded.seq, hash = excluded.hash, "
                           "updated_at = excluded.updated_at");
  anchor.bind(1, static_cast<std::int64_t>(head.seq)).bind(2, head.hash).bind(3, now).run();
}

}  // namespace

SqliteConferenceRegistry::SqliteConferenceRegistry(std::string path, RegistryOptions options)
    : path_(std::move(path)), options_(options) {
  // Created 0600 when new (the registry holds conference nonces); the key database, which
  // kmsd opens first on the same file, reports wider modes.
  (void)tokens::prepare_database_file(path_);
  if (sqlite3_open_v2(path_.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw ProtocolError(ErrorCode::internal_error, "registry database " + path_ + ": " + message);
  }
  try {
    sqlite3_busy_timeout(db_, options_.busy_timeout_ms);
    exec("PRAGMA journal_mode=WAL");
    exec(options_.sync_every_commit ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    exec(kSchema);
    sqlite::Statement count(db_, "SELECT count(*) FROM used_envelopes");
    if (count.step()) replay_count_ = static_cast<std::size_t>(count.integer(0));
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

SqliteConferenceRegistry::~SqliteConferenceRegistry() { sqlite3_close(db_); }

void SqliteConferenceRegistry::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    throw ProtocolError(ErrorCode::internal_error, "registry database: " + message);
  }
}

AdmissionOutcome SqliteConferenceRegistry::admit(const Admission& admission,
                                                 const AdmissionHook& before_commit,
                                                 AuditSink* audit) {
  AdmissionOutcome outcome = AdmissionOutcome::admitted;
  Write write;
  write.apply = [&] { outcome = apply_admission(admission, before_commit); };
  write.audit = audit;
  write.now = admission.now;
  submit(write);
  return outcome;
}

void SqliteConferenceRegistry::submit(Write& write) {
  std::unique_lock lock(queue_mutex_);
  queue_.push_back(&write);
  while (!write.done) {
    if (leader_active_) {  // a batch is being committed; ours may be in the next one
      queue_changed_.wait(lock);
      continue;
    }
    leader_active_ = true;
    const std::size_t take = std::min(queue_.size(), std::max<std::size_t>(options_.max_batch, 1));
    const std::vector<Write*> batch(queue_.begin(),
                                    queue_.begin() + static_cast<std::ptrdiff_t>(take));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take));
    lock.unlock();
    commit_batch(batch);
    lock.lock();
    for (Write* member : batch) member->done = true;
    ++stats_.batches;
    stats_.writes += batch.size();
    stats_.largest_batch = std::max(stats_.largest_batch, batch.size());
    leader_active_ = false;
    queue_changed_.notify_all();  // wakes the batch's callers and the next leader
  }
  lock.unlock();
  if (write.error) std::rethrow_exception(write.error);
}

void SqliteConferenceRegistry::commit_batch(const std::vector<Write*>& batch) {
  try {  // never throws: every failure becomes the error of the writes it affects
    std::lock_guard lock(mutex_);
    std::int64_t now = 0;
    for (const Write* write : batch) now = std::max(now, write->now);
    if (options_.purge_interval_seconds > 0 && now >= next_purge_) {  // its own transaction
      purge_locked(now);
      next_purge_ = now + options_.purge_interval_seconds;
    }
    sqlite::Transaction transaction(db_);
    pending_replay_count_ = replay_count_;
    std::vector<AuditSink*> sinks;
    for (Write* write : batch) {
      const std::size_t replay_count_before = pending_replay_count_;
      sqlite::Savepoint savepoint(db_);
      try {
        write->apply();
        savepoint.release();
      } catch (...) {  // this write alone is not recorded; the later ones don't see it
        write->error = std::current_exception();
        pending_replay_count_ = replay_count_before;
        savepoint.rollback();
        continue;
      }
      if (write->audit && std::find(sinks.begin(), sinks.end(), write->audit) == sinks.end()) {
        sinks.push_back(write->audit);
      }
    }
    for (AuditSink* sink : sinks) {  // the audit records durable before COMMIT
      sink->sync();
      if (const std::optional<AuditHead> head = sink->head()) store_audit_anchor(db_, *head, now);
    }
    transaction.commit();
    replay_count_ = pending_replay_count_;
  } catch (...) {  // nothing of the batch is recorded
    const std::exception_ptr error = std::current_exception();
    for (Write* write : batch) {
      if (!write->error) write->error = error;
    }
  }
}

AdmissionOutcome SqliteConferenceRegistry::apply_admission(const Admission& admission,
                                                           const AdmissionHook& before_commit) {
  {  // entries whose window has passed can never match a fresh envelope again
    sqlite::Statement expire(db_, "DELETE FROM used_envelopes WHERE expires_at < ?1");
    expire.bind(1, admission.now).run();
    const auto expired = static_cast<std::size_t>(sqlite3_changes(db_));
    pending_replay_count_ = pending_replay_count_ > expired ? pending_replay_count_ - expired : 0;
  }

  // Replay record: an envelope already used by another request is a replay; the same
  // request again is a retransmission, answered by recomputing the same responses.
  bool seen_before = false;
  for (const EnvelopeUse& use : admission.envelopes) {
    sqlite::Statement lookup(db_, "SELECT request_digest FROM used_envelopes WHERE digest = ?1");
    lookup.bind(1, use.digest);
    if (lookup.step()) {
      if (lookup.blob(0) != admission.request_digest) {
        throw ProtocolError(ErrorCode::replay, "envelope already used in another request");
      }
      seen_before = true;
    }
  }

  std::optional<Conference> existing = load(admission.conference_id);
  if (existing) {
    if (existing->expires_at <= admission.now) {
      throw ProtocolError(ErrorCode::conference_expired, "conference expired");
    }
    if (existing->chair_id != admission.chair_id) {
      throw ProtocolError(ErrorCode::internal_error, "conference id collision");
    }
    if (existing->profile != admission.profile) {
      throw ProtocolError(ErrorCode::profile_mismatch, "conference was created with profile " +
                                                           std::to_string(existing->profile));
    }
    if (existing->suite != admission.suite) {
      throw ProtocolError(ErrorCode::suite_mismatch,
                          "conference was created with suite " + std::to_string(existing->suite));
    }
  } else if (seen_before) {
    throw ProtocolError(ErrorCode::conference_expired, "conference no longer exists");
  }

  if (seen_before) {
    before_commit(AdmissionOutcome::retransmission);
    return AdmissionOutcome::retransmission;
  }

  if (pending_replay_count_ + admission.envelopes.size() > options_.replay_capacity) {
    throw ProtocolError(ErrorCode::overloaded, "replay record full");
  }

  if (!existing) {
    sqlite::Statement insert(db_,
                             "INSERT INTO conferences (conference_id, chair_id, chair_nonce, "
                             "chair_key_id, profile, suite, created_at, expires_at) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    insert.bind(1, admission.conference_id)
        .bind(2, admission.chair_id)
        .bind(3, admission.chair_nonce.view())
        .bind(4, admission.chair_key_id)
        .bind(5, std::int64_t{admission.profile})
        .bind(6, std::int64_t{admission.suite})
        .bind(7, admission.now)
        .bind(8, admission.conference_expires_at)
        .run();
  }
  // A member admitted again (a new request with a new nonce) replaces its earlier entry:
  // the bridge always gets the member's latest key.
  sqlite::Statement member(
      db_,
      "INSERT INTO conference_members (conference_id, member_id, nonce, key_id, admitted_at, seq) "
      "VALUES (?1, ?2, ?3, ?4, ?5, "
      "(SELECT coalesce(max(seq), 0) + 1 FROM conference_members WHERE conference_id = ?1)) "
      "ON CONFLICT (conference_id, member_id) DO UPDATE SET nonce = excluded.nonce, "
      "key_id = excluded.key_id, admitted_at = excluded.admitted_at, seq = excluded.seq");
  member.bind(1, admission.conference_id)
      .bind(2, admission.responder_id)
      .bind(3, admission.responder_nonce.view())
      .bind(4, admission.responder_key_id)
      .bind(5, admission.now)
      .run();
  for (const EnvelopeUse& use : admission.envelopes) {
    sqlite::Statement insert(
        db_, "INSERT INTO used_envelopes (digest, request_digest, expires_at) VALUES (?1, ?2, ?3)");
    insert.bind(1, use.digest).bind(2, admission.request_digest).bind(3, use.expires_at).run();
  }

  pending_replay_count_ += admission.envelopes.size();
  before_commit(AdmissionOutcome::admitted);
  return AdmissionOutcome::admitted;
}

std::optional<Conference> SqliteConferenceRegistry::load(const Bytes& conference_id) {
  sqlite::Statement select(db_,
                           "SELECT chair_id, chair_nonce, chair_key_id, profile, suite, "
                           "created_at, expires_at, bridge_id FROM conferences "
                           "WHERE conference_id = ?1");
  select.bind(1, conference_id);
  if (!select.step()) return std::nullopt;
  Conference conference;
  conference.conference_id = conference_id;
  conference.chair_id = select.text(0);
  conference.profile = static_cast<std::uint8_t>(select.integer(3));
  conference.suite = static_cast<std::uint8_t>(select.integer(4));
  conference.created_at = select.integer(5);
  conference.expires_at = select.integer(6);
  if (!select.is_null(7)) conference.bridge_id = select.text(7);
  ConferenceMember chair;
  chair.member_id = conference.chair_id;
  chair.role = 1;
  chair.nonce = select.secure_blob(1);
  chair.key_id = select.blob(2);
  chair.admitted_at = conference.created_at;
  conference.members.push_back(std::move(chair));

  sqlite::Statement members(db_,
                            "SELECT member_id, nonce, key_id, admitted_at FROM conference_members "
                            "WHERE conference_id = ?1 ORDER BY seq");
  members.bind(1, conference_id);
  while (members.step()) {
    ConferenceMember member;
    member.member_id = members.text(0);
    member.role = 2;
    member.nonce = members.secure_blob(1);
    member.key_id = members.blob(2);
    member.admitted_at = members.integer(3);
    conference.members.push_back(std::move(member));
  }
  return conference;
}

std::optional<Conference> SqliteConferenceRegistry::find(const Bytes& conference_id) {
  std::lock_guard lock(mutex_);
  return load(conference_id);
}

Conference SqliteConferenceRegistry::bind_for_release(const Bytes& conference_id,
                                                      const std::string& bridge_id,
                                                      std::int64_t now,
                                                      const ReleaseHook& before_commit,
                                                      AuditSink* audit) {
  std::optional<Conference> conference;
  Write write;
  write.apply = [&] {
    conference = load(conference_id);
    if (!conference) throw ProtocolError(ErrorCode::unknown_conference, "no such conference");
    if (conference->expires_at <= now) {
      throw ProtocolError(ErrorCode::conference_expired, "conference expired");
    }
    if (conference->bridge_id && *conference->bridge_id != bridge_id) {
      throw ProtocolError(ErrorCode::bridge_not_authorized,
                          "conference is bound to another bridge");
    }
    if (!conference->bridge_id) {
      sqlite::Statement bind(db_,
                             "UPDATE conferences SET bridge_id = ?2, bound_at = ?3 "
                             "WHERE conference_id = ?1 AND bridge_id IS NULL");
      bind.bind(1, conference_id).bind(2, bridge_id).bind(3, now).run();
      conference->bridge_id = bridge_id;
    }
    before_commit(*conference);
  };
  write.audit = audit;
  write.now = now;
  submit(write);
  return std::move(*conference);
}

std::size_t SqliteConferenceRegistry::purge_expired(std::int64_t now) {
  std::lock_guard lock(mutex_);
  return purge_locked(now);
}

std::size_t SqliteConferenceRegistry::purge_locked(std::int64_t now) {
  sqlite::Transaction transaction(db_);
  const std::int64_t cutoff = now - options_.expired_retention_seconds;
  sqlite::Statement members(db_,
                            "DELETE FROM conference_members WHERE conference_id IN "
                            "(SELECT conference_id FROM conferences WHERE expires_at <= ?1)");
  members.bind(1, cutoff).run();
  sqlite::Statement conferences(db_, "DELETE FROM conferences WHERE expires_at <= ?1");
  conferences.bind(1, cutoff).run();
  const auto deleted = static_cast<std::size_t>(sqlite3_changes(db_));
  sqlite::Statement envelopes(db_, "DELETE FROM used_envelopes WHERE expires_at < ?1");
  envelopes.bind(1, now).run();
  const auto expired = static_cast<std::size_t>(sqlite3_changes(db_));
  transaction.commit();
  replay_count_ = replay_count_ > expired ? replay_count_ - expired : 0;
  return deleted;
}

std::size_t SqliteConferenceRegistry::replay_entries() {
  std::lock_guard lock(mutex_);
  sqlite::Statement count(db_, "SELECT count(*) FROM used_envelopes");
  replay_count_ = count.step() ? static_cast<std::size_t>(count.integer(0)) : 0;
  return replay_count_;
}

GroupCommitStats SqliteConferenceRegistry::group_commit_stats() const {
  std::lock_guard lock(queue_mutex_);
  return stats_;
}

std::size_t SqliteConferenceRegistry::queued_writes() const {
  std::lock_guard lock(queue_mutex_);
  return queue_.size();
}

}  // namespace kms
