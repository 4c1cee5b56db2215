// The registry's tables in PostgreSQL, shared by every node. A batch is one READ COMMITTED
// transaction on one pooled connection; each write locks its conference row (SELECT ... FOR
// UPDATE) before it reads anything else, so writes to one conference from several nodes run
// one after another and each sees the previous one's commit. A conference or envelope
// inserted by two nodes at once collides on its primary key: the second waits for the first
// to commit, then gets a unique violation (storage::Error duplicate) and its write is applied
// again (StoredConferenceRegistry), now seeing the winner's rows.
#include <memory>
#include <optional>

#include "registry_store.h"
#include "storage/database_url.h"
#include "storage/error.h"
#include "storage/kms_schema.h"
#include "storage/postgres.h"

namespace kms {
namespace {

namespace pg = storage::pg;

std::optional<Conference> load(pg::Connection& db, const Bytes& conference_id, bool lock) {
  const pg::Result row =
      db.query(lock ? "SELECT chair_id, chair_nonce, chair_key_id, profile, suite, created_at, "
                      "expires_at, bridge_id FROM conferences WHERE conference_id = $1 FOR UPDATE"
                    : "SELECT chair_id, chair_nonce, chair_key_id, profile, suite, created_at, "
                      "expires_at, bridge_id FROM conferences WHERE conference_id = $1",
               pg::Params().add(conference_id));
  if (row.rows() == 0) return std::nullopt;
  Conference conference;
  conference.conference_id = conference_id;
  conference.chair_id = row.text(0, 0);
  conference.profile = static_cast<std::uint8_t>(row.integer(0, 3));
  conference.suite = static_cast<std::uint8_t>(row.integer(0, 4));
  conference.created_at = row.integer(0, 5);
  conference.expires_at = row.integer(0, 6);
  if (!row.is_null(0, 7)) conference.bridge_id = row.text(0, 7);
  ConferenceMember chair;
  chair.member_id = conference.chair_id;
  chair.role = 1;
  chair.nonce = hsm::SecureBytes(row.bytes_view(0, 1));
  chair.key_id = row.bytes(0, 2);
  chair.admitted_at = conference.created_at;
  conference.members.push_back(std::move(chair));

  const pg::Result members = db.query(
      "SELECT member_id, nonce, key_id, admitted_at FROM conference_members "
      "WHERE conference_id = $1 ORDER BY seq",
      pg::Params().add(conference_id));
  for (int i = 0; i < members.rows(); ++i) {
    ConferenceMember member;
    member.member_id = members.text(i, 0);
    member.role = 2;
    member.nonce = hsm::SecureBytes(members.bytes_view(i, 1));
    member.key_id = members.bytes(i, 2);
    member.admitted_at = members.integer(i, 3);
    conference.members.push_back(std::move(member));
  }
  return conference;
}

class PostgresBatch final : public RegistryBatch {
 public:
  PostgresBatch(pg::Pool::Lease lease, std::string node)
      : lease_(std::move(lease)), transaction_(*lease_), node_(std::move(node)) {}

  void begin_write() override { savepoint_.emplace(*lease_); }
  void keep_write() override {
    savepoint_->release();
    savepoint_.reset();
  }
  void undo_write() override {
    savepoint_->rollback();
    savepoint_.reset();
  }

  std::optional<Conference> lock_conference(const Bytes& conference_id) override {
    return load(*lease_, conference_id, true);
  }

  std::optional<Bytes> envelope_used_by(const Bytes& digest) override {
    const pg::Result row = lease_->query(
        "SELECT request_digest FROM used_envelopes WHERE digest = $1", pg::Params().add(digest));
    if (row.rows() == 0) return std::nullopt;
    return row.bytes(0, 0);
  }

  // A bounded slice, skipping rows another node is deleting right now: never a wait or a
  // deadlock between nodes over housekeeping (the periodic purge takes the rest).
  std::size_t expire_envelopes(std::int64_t now) override {
    return static_cast<std::size_t>(
        lease_
            ->query("DELETE FROM used_envelopes WHERE digest IN (SELECT digest FROM "
                    "used_envelopes WHERE expires_at < $1 LIMIT 64 FOR UPDATE SKIP LOCKED)",
                    pg::Params().add(now))
            .affected());
  }

  void insert_conference(const Admission& admission) override {
    lease_->query(
        "INSERT INTO conferences (conference_id, chair_id, chair_nonce, chair_key_id, profile, "
        "suite, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        pg::Params()
            .add(admission.conference_id)
            .add(admission.chair_id)
            .add(admission.chair_nonce.view())
            .add(admission.chair_key_id)
            .add(std::int64_t{admission.profile})
            .add(std::int64_t{admission.suite})
            .add(admission.now)
            .add(admission.conference_expires_at));
  }

  void upsert_member(const Admission& admission) override {
    // The conference row is locked by this transaction: max(seq) can't race.
    lease_->query(
        "INSERT INTO conference_members (conference_id, member_id, nonce, key_id, admitted_at, "
        "seq) VALUES ($1, $2, $3, $4, $5, "
        "(SELECT coalesce(max(seq), 0) + 1 FROM conference_members WHERE conference_id = $1)) "
        "ON CONFLICT (conference_id, member_id) DO UPDATE SET nonce = excluded.nonce, "
        "key_id = excluded.key_id, admitted_at = excluded.admitted_at, seq = excluded.seq",
        pg::Params()
            .add(admission.conference_id)
            .add(admission.responder_id)
            .add(admission.responder_nonce.view())
            .add(admission.responder_key_id)
            .add(admission.now));
  }

  void insert_envelope(const EnvelopeUse& use, const Bytes& request_digest) override {
    lease_->query(
        "INSERT INTO used_envelopes (digest, request_digest, expires_at) VALUES ($1, $2, $3)",
        pg::Params().add(use.digest).add(request_digest).add(use.expires_at));
  }

  bool bind_bridge(const Bytes& conference_id, const std::string& bridge_id,
                   std::int64_t now) override {
    return lease_
               ->query(
                   "UPDATE conferences SET bridge_id = $2, bound_at = $3 "
                   "WHERE conference_id = $1 AND bridge_id IS NULL",
                   pg::Params().add(conference_id).add(bridge_id).add(now))
               .affected() == 1;
  }

  void store_audit_anchor(const AuditHead& head, std::int64_t now) override {
    lease_->query(
        "INSERT INTO audit_anchor (node, seq, hash, updated_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
        "updated_at = excluded.updated_at",
        pg::Params().add(node_).add(static_cast<std::int64_t>(head.seq)).add(head.hash).add(now));
  }

  void store_audit_journal(const AuditJournal& journal) override {
    if (journal.synced_seq > 0) {
      lease_->query("DELETE FROM audit_journal WHERE node = $1 AND log = $2 AND seq <= $3",
                    pg::Params()
                        .add(node_)
                        .add(journal.log)
                        .add(static_cast<std::int64_t>(journal.synced_seq)));
    }
    for (const AuditJournalLine& line : journal.lines) {
      lease_->query(
          "INSERT INTO audit_journal (node, log, seq, hash, line) VALUES ($1, $2, $3, $4, $5) "
          "ON CONFLICT (node, log, seq) DO NOTHING",
          pg::Params()
              .add(node_)
              .add(journal.log)
              .add(static_cast<std::int64_t>(line.seq))
              .add(line.hash)
              .add(line.line));
    }
  }

  void commit() override { transaction_.commit(); }

 private:
  pg::Pool::Lease lease_;  // first member: returned to the pool last
  pg::Transaction transaction_;
  std::optional<pg::Savepoint> savepoint_;
  std::string node_;
};

class PostgresRegistryStore final : public RegistryStore {
 public:
  PostgresRegistryStore(const storage::DatabaseUrl& url, const RegistryOptions& options)
      : pool_(url), node_(options.node) {
    pg::Pool::Lease lease = pool_.acquire();
    storage::prepare_schema(*lease, storage::registry_schema(storage::Backend::postgresql),
                            url.migration);
  }

  std::unique_ptr<RegistryBatch> begin_batch() override {
    return std::make_unique<PostgresBatch>(pool_.acquire(), node_);
  }

  std::optional<Conference> find(const Bytes& conference_id) override {
    pg::Pool::Lease lease = pool_.acquire();
    // One snapshot for the conference row and its members.
    pg::Transaction transaction(*lease, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    std::optional<Conference> conference = load(*lease, conference_id, false);
    transaction.commit();
    return conference;
  }

  Purged purge(std::int64_t conference_cutoff, std::int64_t envelope_cutoff) override {
    pg::Pool::Lease lease = pool_.acquire();
    pg::Transaction transaction(*lease);
    Purged purged;
    lease->query(
        "DELETE FROM conference_members WHERE conference_id IN "
        "(SELECT conference_id FROM conferences WHERE expires_at <= $1)",
        pg::Params().add(conference_cutoff));
    purged.conferences =
        static_cast<std::size_t>(lease
                                     ->query("DELETE FROM conferences WHERE expires_at <= $1",
                                             pg::Params().add(conference_cutoff))
                                     .affected());
    purged.envelopes =
        static_cast<std::size_t>(lease
                                     ->query("DELETE FROM used_envelopes WHERE expires_at < $1",
                                             pg::Params().add(envelope_cutoff))
                                     .affected());
    transaction.commit();
    return purged;
  }

  std::size_t count_envelopes() override {
    pg::Pool::Lease lease = pool_.acquire();
    return static_cast<std::size_t>(
        lease->query("SELECT count(*) FROM used_envelopes").integer(0, 0));
  }

  std::vector<AuditJournalLine> read_audit_journal(const std::string& log) override {
    pg::Pool::Lease lease = pool_.acquire();
    const pg::Result rows = lease->query(
        "SELECT seq, hash, line FROM audit_journal WHERE node = $1 AND log = $2 ORDER BY seq",
        pg::Params().add(node_).add(log));
    std::vector<AuditJournalLine> lines;
    for (int i = 0; i < rows.rows(); ++i) {
      lines.push_back(
          {static_cast<std::uint64_t>(rows.integer(i, 0)), rows.text(i, 1), rows.text(i, 2)});
    }
    return lines;
  }

  void prune_audit_journal(const std::string& log, std::uint64_t through) override {
    pg::Pool::Lease lease = pool_.acquire();
    lease->query("DELETE FROM audit_journal WHERE node = $1 AND log = $2 AND seq <= $3",
                 pg::Params().add(node_).add(log).add(static_cast<std::int64_t>(through)));
  }

  std::string describe() const override { return pool_.display(); }

 private:
  pg::Pool pool_;
  std::string node_;
};

}  // namespace

std::unique_ptr<RegistryStore> open_postgres_registry_store(const std::string& url,
                                                            const RegistryOptions& options) {
  return std::make_unique<PostgresRegistryStore>(storage::DatabaseUrl::parse(url), options);
}

}  // namespace kms
