#include "kms/core/sqlite_conference_registry.h"

#include <sqlite3.h>

#include "sqlite_statement.h"

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
)sql";

}  // namespace

SqliteConferenceRegistry::SqliteConferenceRegistry(std::string path, RegistryOptions options)
    : path_(std::move(path)), options_(options) {
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
                                                 const AdmissionHook& before_commit) {
  std::lock_guard lock(mutex_);
  if (options_.purge_interval_seconds > 0 && admission.now >= next_purge_) {
    purge_locked(admission.now);
    next_purge_ = admission.now + options_.purge_interval_seconds;
  }
  {  // entries whose window has passed can never match a fresh envelope again
    sqlite::Statement expire(db_, "DELETE FROM used_envelopes WHERE expires_at < ?1");
    expire.bind(1, admission.now).run();
    const auto expired = static_cast<std::size_t>(sqlite3_changes(db_));
    replay_count_ = replay_count_ > expired ? replay_count_ - expired : 0;
  }
  sqlite::Transaction transaction(db_);

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
    transaction.commit();
    return AdmissionOutcome::retransmission;
  }

  if (replay_count_ + admission.envelopes.size() > options_.replay_capacity) {
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

  before_commit(AdmissionOutcome::admitted);
  transaction.commit();
  replay_count_ += admission.envelopes.size();
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
                                                      const ReleaseHook& before_commit) {
  std::lock_guard lock(mutex_);
  sqlite::Transaction transaction(db_);
  std::optional<Conference> conference = load(conference_id);
  if (!conference) throw ProtocolError(ErrorCode::unknown_conference, "no such conference");
  if (conference->expires_at <= now) {
    throw ProtocolError(ErrorCode::conference_expired, "conference expired");
  }
  if (conference->bridge_id && *conference->bridge_id != bridge_id) {
    throw ProtocolError(ErrorCode::bridge_not_authorized, "conference is bound to another bridge");
  }
  if (!conference->bridge_id) {
    sqlite::Statement bind(db_,
                           "UPDATE conferences SET bridge_id = ?2, bound_at = ?3 "
                           "WHERE conference_id = ?1 AND bridge_id IS NULL");
    bind.bind(1, conference_id).bind(2, bridge_id).bind(3, now).run();
    conference->bridge_id = bridge_id;
  }
  before_commit(*conference);
  transaction.commit();
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

}  // namespace kms
