// The registry's tables in an SQLite file. One connection, serialised by a mutex that a batch
// holds from BEGIN IMMEDIATE to COMMIT (SQLite has one writer at a time anyway).
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

#include "kms/core/sqlite_conference_registry.h"
#include "registry_store.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "storage/sqlite.h"
#include "storage/wal_checkpointer.h"
#include "tokens/key_database.h"

namespace kms {
namespace {

namespace sql = storage::sqlite;

std::optional<Conference> load(sql::Connection& db, const Bytes& conference_id) {
  sql::Query select(db,
                    "SELECT chair_id, chair_nonce, chair_key_id, profile, suite, created_at, "
                    "expires_at, bridge_id FROM conferences WHERE conference_id = ?1");
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
  chair.nonce = hsm::SecureBytes(select.blob_view(1));
  chair.key_id = select.blob(2);
  chair.admitted_at = conference.created_at;
  conference.members.push_back(std::move(chair));

  sql::Query members(db,
                     "SELECT member_id, nonce, key_id, admitted_at FROM conference_members "
                     "WHERE conference_id = ?1 ORDER BY seq");
  members.bind(1, conference_id);
  while (members.step()) {
    ConferenceMember member;
    member.member_id = members.text(0);
    member.role = 2;
    member.nonce = hsm::SecureBytes(members.blob_view(1));
    member.key_id = members.blob(2);
    member.admitted_at = members.integer(3);
    conference.members.push_back(std::move(member));
  }
  return conference;
}

void prune_journal(sql::Connection& db, const std::string& node, const std::string& log,
                   std::uint64_t through) {
  sql::Query prune(db, "DELETE FROM audit_journal WHERE node = ?1 AND log = ?2 AND seq <= ?3");
  prune.bind(1, node).bind(2, log).bind(3, static_cast<std::int64_t>(through)).run();
}

class SqliteBatch final : public RegistryBatch {
 public:
  SqliteBatch(sql::Connection& db, std::unique_lock<std::mutex> lock, std::string node)
      : lock_(std::move(lock)), node_(std::move(node)), db_(db), transaction_(db) {}

  void begin_write() override { savepoint_.emplace(db_); }
  void keep_write() override {
    savepoint_->release();
    savepoint_.reset();
  }
  void undo_write() override {
    savepoint_->rollback();
    savepoint_.reset();
  }

  std::optional<Conference> lock_conference(const Bytes& conference_id) override {
    return load(db_, conference_id);  // BEGIN IMMEDIATE holds the only write lock already
  }

  std::optional<Bytes> envelope_used_by(const Bytes& digest) override {
    sql::Query lookup(db_, "SELECT request_digest FROM used_envelopes WHERE digest = ?1");
    lookup.bind(1, digest);
    if (!lookup.step()) return std::nullopt;
    return lookup.blob(0);
  }

  std::size_t expire_envelopes(std::int64_t now) override {
    sql::Query expire(db_, "DELETE FROM used_envelopes WHERE expires_at < ?1");
    expire.bind(1, now).run();
    return static_cast<std::size_t>(db_.changes());
  }

  void insert_conference(const Admission& admission) override {
    sql::Query insert(db_,
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

  void upsert_member(const Admission& admission) override {
    sql::Query member(
        db_,
        "INSERT INTO conference_members (conference_id, member_id, nonce, key_id, admitted_at, "
        "seq) VALUES (?1, ?2, ?3, ?4, ?5, "
        "(SELECT coalesce(max(seq), 0) + 1 FROM conference_members WHERE conference_id = ?1)) "
        "ON CONFLICT (conference_id, member_id) DO UPDATE SET nonce = excluded.nonce, "
        "key_id = excluded.key_id, admitted_at = excluded.admitted_at, seq = excluded.seq");
    member.bind(1, admission.conference_id)
        .bind(2, admission.responder_id)
        .bind(3, admission.responder_nonce.view())
        .bind(4, admission.responder_key_id)
        .bind(5, admission.now)
        .run();
  }

  void insert_envelope(const EnvelopeUse& use, const Bytes& request_digest) override {
    sql::Query insert(
        db_, "INSERT INTO used_envelopes (digest, request_digest, expires_at) VALUES (?1, ?2, ?3)");
    insert.bind(1, use.digest).bind(2, request_digest).bind(3, use.expires_at).run();
  }

  bool bind_bridge(const Bytes& conference_id, const std::string& bridge_id,
                   std::int64_t now) override {
    sql::Query bind(db_,
                    "UPDATE conferences SET bridge_id = ?2, bound_at = ?3 "
                    "WHERE conference_id = ?1 AND bridge_id IS NULL");
    bind.bind(1, conference_id).bind(2, bridge_id).bind(3, now).run();
    return db_.changes() == 1;
  }

  // The audit log's durable head, written in the transaction of the batch it audited: the
  // log can't then lose its last records unnoticed (kms-audit verify --anchor-db).
  void store_audit_anchor(const AuditHead& head, std::int64_t now) override {
    sql::Query anchor(db_,
                      "INSERT INTO audit_anchor (id, seq, hash, updated_at) "
                      "VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
                      "seq = excluded.seq, hash = excluded.hash, "
                      "updated_at = excluded.updated_at");
    anchor.bind(1, static_cast<std::int64_t>(head.seq)).bind(2, head.hash).bind(3, now).run();
  }

  void store_audit_journal(const AuditJournal& journal) override {
    if (journal.synced_seq > 0) prune_journal(db_, node_, journal.log, journal.synced_seq);
    for (const AuditJournalLine& line : journal.lines) {
      sql::Query insert(db_,
                        "INSERT INTO audit_journal (node, log, seq, hash, line) "
                        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (node, log, seq) DO NOTHING");
      insert.bind(1, node_)
          .bind(2, journal.log)
          .bind(3, static_cast<std::int64_t>(line.seq))
          .bind(4, line.hash)
          .bind(5, line.line)
          .run();
    }
  }

  void commit() override { transaction_.commit(); }

 private:
  std::unique_lock<std::mutex> lock_;  // first member: released last
  std::string node_;
  sql::Connection& db_;
  sql::Transaction transaction_;
  std::optional<sql::Savepoint> savepoint_;
};

sql::OpenOptions open_options(const RegistryOptions& options) {
  sql::OpenOptions open;
  open.busy_timeout_ms = options.busy_timeout_ms;
  open.sync_full = options.sync_every_commit;
  return open;
}

class SqliteRegistryStore final : public RegistryStore {
 public:
  SqliteRegistryStore(const std::string& path, const RegistryOptions& options)
      : db_(path, open_options(options)), node_(options.node) {
    storage::migrate(db_, storage::registry_schema(storage::Backend::sqlite));
    if (options.checkpoint_interval_ms > 0) {
      sql::CheckpointerOptions checkpoints;
      checkpoints.interval = std::chrono::milliseconds(options.checkpoint_interval_ms);
      checkpointer_.emplace(path, open_options(options), checkpoints);
      // Once the WAL starts over, its file is cut back to this size (it stays at its
      // largest otherwise).
      db_.exec("PRAGMA journal_size_limit=67108864");
      db_.on_wal_commit([this](int wal_pages) { checkpointer_->committed(wal_pages); });
    }
  }
  ~SqliteRegistryStore() override {
    if (checkpointer_) db_.on_wal_commit({});  // before the checkpointer goes
  }
  SqliteRegistryStore(const SqliteRegistryStore&) = delete;
  SqliteRegistryStore& operator=(const SqliteRegistryStore&) = delete;

  std::unique_ptr<RegistryBatch> begin_batch() override {
    std::unique_lock lock(mutex_);
    return std::make_unique<SqliteBatch>(db_, std::move(lock), node_);
  }

  std::optional<Conference> find(const Bytes& conference_id) override {
    std::lock_guard lock(mutex_);
    return load(db_, conference_id);
  }

  Purged purge(std::int64_t conference_cutoff, std::int64_t envelope_cutoff) override {
    std::lock_guard lock(mutex_);
    sql::Transaction transaction(db_);
    sql::Query members(db_,
                       "DELETE FROM conference_members WHERE conference_id IN "
                       "(SELECT conference_id FROM conferences WHERE expires_at <= ?1)");
    members.bind(1, conference_cutoff).run();
    Purged purged;
    sql::Query conferences(db_, "DELETE FROM conferences WHERE expires_at <= ?1");
    conferences.bind(1, conference_cutoff).run();
    purged.conferences = static_cast<std::size_t>(db_.changes());
    sql::Query envelopes(db_, "DELETE FROM used_envelopes WHERE expires_at < ?1");
    envelopes.bind(1, envelope_cutoff).run();
    purged.envelopes = static_cast<std::size_t>(db_.changes());
    transaction.commit();
    return purged;
  }

  std::size_t count_envelopes() override {
    std::lock_guard lock(mutex_);
    sql::Query count(db_, "SELECT count(*) FROM used_envelopes");
    return count.step() ? static_cast<std::size_t>(count.integer(0)) : 0;
  }

  std::vector<AuditJournalLine> read_audit_journal(const std::string& log) override {
    std::lock_guard lock(mutex_);
    sql::Query select(
        db_, "SELECT seq, hash, line FROM audit_journal WHERE node = ?1 AND log = ?2 ORDER BY seq");
    select.bind(1, node_).bind(2, log);
    std::vector<AuditJournalLine> rows;
    while (select.step()) {
      rows.push_back(
          {static_cast<std::uint64_t>(select.integer(0)), select.text(1), select.text(2)});
    }
    return rows;
  }

  void prune_audit_journal(const std::string& log, std::uint64_t through) override {
    std::lock_guard lock(mutex_);
    prune_journal(db_, node_, log, through);
  }

  std::string describe() const override { return db_.path(); }

  RegistryCheckpointStats checkpoint_stats() const override {
    if (!checkpointer_) return {};
    const sql::CheckpointStats stats = checkpointer_->stats();
    return {stats.checkpoints, stats.busy, stats.failures, stats.last_wal_pages};
  }

 private:
  sql::Connection db_;
  std::string node_;
  std::mutex mutex_;
  std::optional<sql::WalCheckpointer> checkpointer_;  // after db_: destroyed before it
};

}  // namespace

std::unique_ptr<RegistryStore> open_sqlite_registry_store(const std::string& path,
                                                          const RegistryOptions& options) {
  // Created 0600 when new (the registry holds conference nonces); the key database, which
  // kmsd opens first on the same file, reports wider modes.
  (void)tokens::prepare_database_file(path);
  try {
    return std::make_unique<SqliteRegistryStore>(path, options);
  } catch (const storage::Error& error) {
    throw ProtocolError(ErrorCode::internal_error,
                        "registry database " + path + ": " + error.what());
  }
}

SqliteConferenceRegistry::SqliteConferenceRegistry(const std::string& path, RegistryOptions options)
    : StoredConferenceRegistry(open_sqlite_registry_store(path, options), options) {}

}  // namespace kms
