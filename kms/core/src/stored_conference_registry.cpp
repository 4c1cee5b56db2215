#include "kms/core/stored_conference_registry.h"

#include <algorithm>

#include "admission_rules.h"
#include "kms/core/sqlite_conference_registry.h"
#include "registry_store.h"
#include "storage/database_url.h"
#include "storage/error.h"

namespace kms {
namespace {

// A write that lost a race with another node is applied again this many times at most
// (each attempt sees the other's commit, so the second normally settles it).
constexpr int kWriteAttempts = 4;

// Storage failures as the protocol's: the database unreachable, busy or a race lost past
// the retries is overloaded (503, try again), anything else internal_error.
ProtocolError protocol_error(const storage::Error& error) {
  if (error.transient()) {
    return ProtocolError(ErrorCode::overloaded,
                         error.kind() == storage::ErrorKind::unavailable
                             ? "registry database unavailable"
                             : "registry database busy",
                         error.what());
  }
  return ProtocolError(ErrorCode::internal_error, "registry database", error.what());
}

template <typename Body>
auto translated(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const storage::Error& error) {
    throw protocol_error(error);
  }
}

}  // namespace

StoredConferenceRegistry::StoredConferenceRegistry(std::unique_ptr<RegistryStore> store,
                                                   RegistryOptions options)
    : store_(std::move(store)),
      recent_(options.recent_envelopes),
      options_(std::move(options)),
      description_(store_->describe()) {
  replay_count_ = translated([&] { return store_->count_envelopes(); });
}

StoredConferenceRegistry::~StoredConferenceRegistry() = default;

AdmissionOutcome StoredConferenceRegistry::admit(const Admission& admission,
                                                 const AdmissionHook& before_commit,
                                                 AuditSink* audit) {
  AdmissionOutcome outcome = AdmissionOutcome::admitted;
  Write write;
  write.apply = [&](RegistryBatch& batch) {
    outcome = apply_admission(batch, admission, before_commit, write);
    write.admitted = outcome == AdmissionOutcome::admitted ? &admission : nullptr;
  };
  write.audit = audit;
  write.now = admission.now;
  submit(write);
  return outcome;
}

void StoredConferenceRegistry::submit(Write& write) {
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

void StoredConferenceRegistry::apply_with_retries(RegistryBatch& batch, Write& write) {
  for (int attempt = 1;; ++attempt) {
    const std::size_t replay_count_before = pending_replay_count_;
    batch.begin_write();
    try {
      write.apply(batch);
      batch.keep_write();
      return;
    } catch (const storage::Error& error) {
      pending_replay_count_ = replay_count_before;
      batch.undo_write();  // throws if the transaction is gone: the whole batch fails
      const bool lost_a_race = error.kind() == storage::ErrorKind::conflict ||
                               error.kind() == storage::ErrorKind::duplicate;
      if (lost_a_race && !write.hook_called && attempt < kWriteAttempts) continue;
      write.error = std::make_exception_ptr(protocol_error(error));
      return;
    } catch (...) {  // this write alone is not recorded; the later ones don't see it
      write.error = std::current_exception();
      pending_replay_count_ = replay_count_before;
      batch.undo_write();
      return;
    }
  }
}

void StoredConferenceRegistry::commit_batch(const std::vector<Write*>& batch) {
  try {  // never throws: every failure becomes the error of the writes it affects
    std::lock_guard lock(mutex_);
    std::int64_t now = 0;
    for (const Write* write : batch) now = std::max(now, write->now);
    translated([&] {
      if (options_.purge_interval_seconds > 0 && now >= next_purge_) {  // its own transaction
        purge_locked(now);
        next_purge_ = now + options_.purge_interval_seconds;
      }
      const std::unique_ptr<RegistryBatch> transaction = store_->begin_batch();
      pending_replay_count_ = replay_count_;
      std::vector<AuditSink*> sinks;
      for (Write* write : batch) {
        apply_with_retries(*transaction, *write);
        if (write->error) continue;
        if (write->audit && std::find(sinks.begin(), sinks.end(), write->audit) == sinks.end()) {
          sinks.push_back(write->audit);
        }
      }
      // The audit records durable with the COMMIT (journal) or before it (sync).
      std::vector<std::pair<AuditSink*, AuditJournal>> journals;
      std::uint64_t syncs = 0;
      for (AuditSink* sink : sinks) {
        if (std::optional<AuditJournal> journal = sink->prepare_journal()) {
          transaction->store_audit_journal(*journal);
          if (journal->head.seq > 0) transaction->store_audit_anchor(journal->head, now);
          journals.emplace_back(sink, std::move(*journal));
          continue;
        }
        sink->sync();
        ++syncs;
        if (const std::optional<AuditHead> head = sink->head()) {
          transaction->store_audit_anchor(*head, now);
        }
      }
      transaction->commit();
      replay_count_ = pending_replay_count_;
      for (const Write* write : batch) {
        if (write->error || !write->admitted) continue;
        for (const EnvelopeUse& use : write->admitted->envelopes) {
          recent_.remember(use.digest, write->admitted->request_digest);
        }
      }
      for (auto& [sink, journal] : journals) sink->journal_committed(journal);
      std::lock_guard stats_lock(queue_mutex_);
      stats_.audit_syncs += syncs;
      stats_.audit_journals += journals.size();
      return 0;
    });
  } catch (...) {  // nothing of the batch is recorded
    const std::exception_ptr error = std::current_exception();
    for (Write* write : batch) {
      if (!write->error) write->error = error;
    }
  }
}

AdmissionOutcome StoredConferenceRegistry::apply_admission(RegistryBatch& batch,
                                                           const Admission& admission,
                                                           const AdmissionHook& before_commit,
                                                           Write& write) {
  {  // entries whose window has passed can never match a fresh envelope again
    const std::size_t expired = batch.expire_envelopes(admission.now);
    pending_replay_count_ = pending_replay_count_ > expired ? pending_replay_count_ - expired : 0;
  }
  // The conference first: its lock orders this write after any other node's write to it,
  // so the replay record read next includes what that write committed.
  std::optional<Conference> existing = batch.lock_conference(admission.conference_id);

  // Replay record: an envelope already used by another request is a replay; the same
  // request again is a retransmission, answered by recomputing the same responses.
  bool seen_before = false;
  for (const EnvelopeUse& use : admission.envelopes) {
    if (const std::optional<Bytes> used_by = batch.envelope_used_by(use.digest)) {
      seen_before = rules::envelope_seen_before(*used_by, admission) || seen_before;
    }
  }
  if (seen_before && !existing) {
    // Another node created the conference with these envelopes and committed after our
    // lock found nothing: both were committed together, so the conference is there now.
    existing = batch.lock_conference(admission.conference_id);
  }
  const rules::AdmissionStep step = rules::admission_step(
      admission, existing, seen_before, pending_replay_count_, options_.replay_capacity);
  if (step == rules::AdmissionStep::retransmission) {
    write.hook_called = true;
    before_commit(AdmissionOutcome::retransmission);
    return AdmissionOutcome::retransmission;
  }
  if (step == rules::AdmissionStep::create_conference) batch.insert_conference(admission);
  // A member admitted again (a new request with a new nonce) replaces its earlier entry:
  // the bridge always gets the member's latest key.
  batch.upsert_member(admission);
  for (const EnvelopeUse& use : admission.envelopes) {
    batch.insert_envelope(use, admission.request_digest);
  }
  pending_replay_count_ += admission.envelopes.size();
  write.hook_called = true;
  before_commit(AdmissionOutcome::admitted);
  return AdmissionOutcome::admitted;
}

std::optional<Bytes> StoredConferenceRegistry::recent_envelope_use(
    const Bytes& envelope_digest) const {
  return recent_.used_by(envelope_digest);
}

std::optional<Conference> StoredConferenceRegistry::find(const Bytes& conference_id) {
  return translated([&] { return store_->find(conference_id); });
}

Conference StoredConferenceRegistry::bind_for_release(const Bytes& conference_id,
                                                      const std::string& bridge_id,
                                                      std::int64_t now,
                                                      const ReleaseHook& before_commit,
                                                      AuditSink* audit) {
  std::optional<Conference> conference;
  Write write;
  write.apply = [&](RegistryBatch& batch) {
    conference = batch.lock_conference(conference_id);
    if (rules::release_binds(conference, bridge_id, now)) {
      if (!batch.bind_bridge(conference_id, bridge_id, now)) {
        throw storage::Error(storage::ErrorKind::conflict, "conference bound meanwhile");
      }
      conference->bridge_id = bridge_id;
    }
    write.hook_called = true;
    before_commit(*conference);
  };
  write.audit = audit;
  write.now = now;
  submit(write);
  return std::move(*conference);
}

std::size_t StoredConferenceRegistry::purge_expired(std::int64_t now) {
  std::lock_guard lock(mutex_);
  return translated([&] { return purge_locked(now); });
}

std::size_t StoredConferenceRegistry::purge_locked(std::int64_t now) {
  const RegistryStore::Purged purged = store_->purge(now - options_.expired_retention_seconds, now);
  // Other nodes' writes and purges are in the table too: the capacity count starts again
  // from what it holds.
  replay_count_ = store_->count_envelopes();
  return purged.conferences;
}

std::size_t StoredConferenceRegistry::replay_entries() {
  std::lock_guard lock(mutex_);
  replay_count_ = translated([&] { return store_->count_envelopes(); });
  return replay_count_;
}

std::size_t StoredConferenceRegistry::restore_audit_journal(AuditSink& audit) {
  const std::string log = audit.journal_log();
  if (log.empty()) return 0;  // a sink that journals nothing
  std::lock_guard lock(mutex_);
  const std::vector<AuditJournalLine> rows =
      translated([&] { return store_->read_audit_journal(log); });
  const std::optional<AuditHead> before = audit.head();
  const std::uint64_t synced = audit.restore_from_journal(rows);
  if (synced > 0) translated([&] { store_->prune_audit_journal(log, synced); });
  return static_cast<std::size_t>(std::count_if(
      rows.begin(), rows.end(),
      [&](const AuditJournalLine& row) { return row.seq > (before ? before->seq : 0); }));
}

void StoredConferenceRegistry::prune_audit_journal(const AuditSink& audit,
                                                   std::uint64_t synced_seq) {
  const std::string log = audit.journal_log();
  if (log.empty() || synced_seq == 0) return;
  std::lock_guard lock(mutex_);
  translated([&] { store_->prune_audit_journal(log, synced_seq); });
}

GroupCommitStats StoredConferenceRegistry::group_commit_stats() const {
  std::lock_guard lock(queue_mutex_);
  return stats_;
}

RegistryCheckpointStats StoredConferenceRegistry::checkpoint_stats() const {
  return store_->checkpoint_stats();
}

std::size_t StoredConferenceRegistry::queued_writes() const {
  std::lock_guard lock(queue_mutex_);
  return queue_.size();
}

std::unique_ptr<StoredConferenceRegistry> open_conference_registry(const std::string& database,
                                                                   RegistryOptions options) {
  const storage::DatabaseUrl url = [&] {
    try {
      return storage::DatabaseUrl::parse(database);
    } catch (const storage::Error& error) {
      throw ProtocolError(ErrorCode::internal_error, "registry database", error.what());
    }
  }();
  if (url.backend == storage::Backend::sqlite) {
    return std::make_unique<SqliteConferenceRegistry>(url.sqlite_path, std::move(options));
  }
  std::unique_ptr<RegistryStore> store = [&] {
    try {
      return open_postgres_registry_store(database, options);
    } catch (const storage::Error& error) {
      throw ProtocolError(ErrorCode::internal_error, "registry database", error.what());
    }
  }();
  return std::make_unique<StoredConferenceRegistry>(std::move(store), std::move(options));
}

}  // namespace kms
