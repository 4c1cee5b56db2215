// Group commit in the registry, on both backends (SQLite, PostgreSQL): concurrent admissions and
// bindings share one transaction and one audit sync, yet behave as if applied one by one in arrival
// order; an audit append failure drops only its own write, an audit sync failure the whole batch;
// every acknowledged write is there after a reopen.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "kms/core/protocol.h"
#include "kms/core/stored_conference_registry.h"
#include "support/test_database.h"

namespace {

using kms::Admission;
using kms::AdmissionOutcome;
using kms::Bytes;

constexpr std::int64_t kNow = 1'800'000'000;
const std::string kChair = "sip:alice@ims.example.net";

// 32 bytes that differ for every (tag, n).
Bytes digest(std::uint8_t tag, int n) {
  Bytes out(32, tag);
  out[0] = static_cast<std::uint8_t>(n);
  out[1] = static_cast<std::uint8_t>(n >> 8);
  return out;
}

std::string member_name(int n) { return "sip:member" + std::to_string(n) + "@ims.example.net"; }

// Request n of the chair's conference `conference` (its chair nonce), admitting member n.
Admission request(int conference, int n) {
  Admission a;
  a.chair_id = kChair;
  a.chair_nonce = hsm::SecureBytes(digest(1, conference));
  a.conference_id = kms::protocol::conference_id(a.chair_id, a.chair_nonce.view());
  a.chair_key_id = kms::protocol::key_id(a.conference_id, a.chair_id, a.chair_nonce.view());
  a.responder_id = member_name(n);
  a.responder_nonce = hsm::SecureBytes(digest(2, n));
  a.responder_key_id =
      kms::protocol::key_id(a.conference_id, a.responder_id, a.responder_nonce.view());
  a.profile = 1;
  a.suite = 1;
  a.request_digest = digest(3, n);
  a.envelopes[0] = {digest(4, n), kNow + 300};
  a.envelopes[1] = {digest(5, n), kNow + 300};
  a.now = kNow;
  a.conference_expires_at = kNow + 3600;
  return a;
}

// Another request (member `n`) that reuses the responder envelope of `original`: a replay.
Admission replay_of(const Admission& original, int conference, int n) {
  Admission a = request(conference, n);
  a.envelopes[1] = original.envelopes[1];
  return a;
}

// An audit sink with group commit: append() keeps events pending, sync() makes them
// durable. Faults: an append for one member fails; the n-th sync fails. A closed gate
// holds every sync() until opened (to queue writes behind a commit in progress).
class BatchingAuditSink : public kms::AuditSink {
 public:
  void record(const kms::AuditEvent& event) override {
    append(event);
    sync();
  }
  void append(const kms::AuditEvent& event) override {
    std::lock_guard lock(mutex_);
    if (event.fields.at("member") == failing_member_) {
      throw kms::AuditUnavailable("test: append fails for " + failing_member_);
    }
    pending_.push_back(event);
  }
  void sync() override {
    std::unique_lock lock(mutex_);
    const int number = ++syncs_entered_;
    changed_.notify_all();
    changed_.wait(lock, [this] { return !gate_closed_; });
    if (number == failing_sync_) {
      pending_.clear();
      throw kms::AuditUnavailable("test: sync fails");
    }
    durable_.insert(durable_.end(), pending_.begin(), pending_.end());
    pending_.clear();
  }

  void fail_append_for(const std::string& member) {
    std::lock_guard lock(mutex_);
    failing_member_ = member;
  }
  void fail_sync_number(int n) {  // the n-th sync() call (1-based) fails
    std::lock_guard lock(mutex_);
    failing_sync_ = n;
  }
  void close_gate() {
    std::lock_guard lock(mutex_);
    gate_closed_ = true;
  }
  void open_gate() {
    std::lock_guard lock(mutex_);
    gate_closed_ = false;
    changed_.notify_all();
  }
  void wait_for_syncs(int n) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return syncs_entered_ >= n; });
  }
  int syncs() const {
    std::lock_guard lock(mutex_);
    return syncs_entered_;
  }
  std::vector<kms::AuditEvent> durable() const {
    std::lock_guard lock(mutex_);
    return durable_;
  }
  std::size_t pending() const {
    std::lock_guard lock(mutex_);
    return pending_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string failing_member_;
  int failing_sync_ = 0;
  bool gate_closed_ = false;
  int syncs_entered_ = 0;
  std::vector<kms::AuditEvent> pending_;
  std::vector<kms::AuditEvent> durable_;
};

class GroupCommitTest : public ::testing::TestWithParam<testsupport::DatabaseBackend> {
 protected:
  void SetUp() override {
    KMS_REQUIRE_DATABASE(database);
    registry = kms::open_conference_registry(path);
  }
  testsupport::TestDatabase database{GetParam()};
  std::string path = database.url();
  BatchingAuditSink audit;
  std::unique_ptr<kms::StoredConferenceRegistry> registry;

  // "admitted", "retransmission", "audit_unavailable" or the ProtocolError code name.
  std::string admit(const Admission& a) {
    try {
      const AdmissionOutcome outcome = registry->admit(
          a,
          [this, member = a.responder_id](AdmissionOutcome o) {
            audit.append({o == AdmissionOutcome::admitted ? "admission" : "retransmission",
                          "ok",
                          {{"member", member}}});
          },
          &audit);
      return outcome == AdmissionOutcome::admitted ? "admitted" : "retransmission";
    } catch (const kms::AuditUnavailable&) {
      return "audit_unavailable";
    } catch (const kms::ProtocolError& error) {
      return std::string(kms::error_code_name(error.code()));
    }
  }

  // Commits `blocker` held in its audit sync, queues `batch` behind it in this order, then
  // lets everything commit: `batch` is committed as one group. Returns batch's results.
  std::vector<std::string> commit_as_one_batch(const Admission& blocker,
                                               const std::vector<Admission>& batch) {
    const int syncs_before = audit.syncs();
    audit.close_gate();
    std::string blocker_result;
    std::vector<std::string> results(batch.size());
    std::vector<std::thread> threads;
    threads.emplace_back([&] { blocker_result = admit(blocker); });
    audit.wait_for_syncs(syncs_before + 1);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = admit(batch[i]); });
      wait_until_queued(i + 1);  // keeps the arrival order
    }
    audit.open_gate();
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(blocker_result, "admitted");
    return results;
  }

  void wait_until_queued(std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (registry->queued_writes() < n) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "writes never queued";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void reopen() {
    registry.reset();
    registry = kms::open_conference_registry(path);
  }

  // Member ids of a conference after the chair, empty if it does not exist.
  std::vector<std::string> members_of(int conference) {
    std::vector<std::string> out;
    if (auto c = registry->find(request(conference, 0).conference_id)) {
      for (std::size_t i = 1; i < c->members.size(); ++i) out.push_back(c->members[i].member_id);
    }
    return out;
  }

  std::size_t durable_events_for(const std::string& member) {
    std::size_t n = 0;
    for (const auto& event : audit.durable()) n += event.fields.at("member") == member;
    return n;
  }
};

TEST_P(GroupCommitTest, ACallerAloneCommitsAtOnceInABatchOfOne) {
  for (int n = 0; n < 3; ++n) EXPECT_EQ(admit(request(0, n)), "admitted");
  const kms::GroupCommitStats stats = registry->group_commit_stats();
  EXPECT_EQ(stats.batches, 3u);
  EXPECT_EQ(stats.writes, 3u);
  EXPECT_EQ(stats.largest_batch, 1u);
  EXPECT_EQ(audit.syncs(), 3);
  EXPECT_EQ(audit.pending(), 0u);
}

TEST_P(GroupCommitTest, WritesQueuedDuringACommitShareOneTransactionAndOneSync) {
  const Admission first = request(0, 1);
  const std::vector<Admission> batch = {request(1, 2),          request(1, 3), request(1, 2),
                                        replay_of(first, 2, 4), request(2, 5), request(3, 6)};
  const std::vector<std::string> results = commit_as_one_batch(first, batch);
  // In arrival order: the second copy of request 2 sees the first (retransmission) and the
  // reuse of request 1's envelope is a replay, although all are in one transaction.
  EXPECT_EQ(results, (std::vector<std::string>{"admitted", "admitted", "retransmission", "replay",
                                               "admitted", "admitted"}));
  const kms::GroupCommitStats stats = registry->group_commit_stats();
  EXPECT_EQ(stats.batches, 2u);
  EXPECT_EQ(stats.largest_batch, batch.size());
  EXPECT_EQ(audit.syncs(), 2);
  EXPECT_EQ(audit.durable().size(), 6u);  // first, 2, 3, 2 (retransmission), 5, 6

  reopen();
  EXPECT_EQ(members_of(0), (std::vector<std::string>{member_name(1)}));
  EXPECT_EQ(members_of(1), (std::vector<std::string>{member_name(2), member_name(3)}));
  EXPECT_EQ(members_of(2), (std::vector<std::string>{member_name(5)}));
  EXPECT_EQ(members_of(3), (std::vector<std::string>{member_name(6)}));
  EXPECT_EQ(admit(request(1, 3)), "retransmission");  // the replay record survived
  EXPECT_EQ(admit(replay_of(request(1, 3), 4, 9)), "replay");
}

TEST_P(GroupCommitTest, AFailingAuditAppendDropsOnlyItsOwnWrite) {
  audit.fail_append_for(member_name(2));
  // Request 2 would create conference 1; request 3 joins conference 1 after it.
  const std::vector<Admission> batch = {request(1, 2), request(1, 3), request(2, 4)};
  const std::vector<std::string> results = commit_as_one_batch(request(0, 1), batch);
  EXPECT_EQ(results, (std::vector<std::string>{"audit_unavailable", "admitted", "admitted"}));
  EXPECT_EQ(registry->group_commit_stats().largest_batch, batch.size());
  EXPECT_EQ(durable_events_for(member_name(2)), 0u);
  EXPECT_EQ(durable_events_for(member_name(3)), 1u);
  EXPECT_EQ(durable_events_for(member_name(4)), 1u);

  reopen();
  // Request 3 did not depend on the dropped request: it created the conference itself.
  EXPECT_EQ(members_of(1), (std::vector<std::string>{member_name(3)}));
  EXPECT_EQ(members_of(2), (std::vector<std::string>{member_name(4)}));
  audit.fail_append_for("");
  // Nothing of request 2 was recorded: its envelopes are unused, it is admitted now.
  EXPECT_EQ(admit(request(1, 2)), "admitted");
  EXPECT_EQ(members_of(1), (std::vector<std::string>{member_name(3), member_name(2)}));
}

TEST_P(GroupCommitTest, AFailingAuditSyncFailsTheWholeBatchAndRecordsNothing) {
  const Admission first = request(0, 1);
  audit.fail_sync_number(2);  // the blocker's is the first, the batch's the second
  const std::vector<Admission> batch = {request(1, 2), request(0, 3), replay_of(first, 2, 4),
                                        request(1, 2)};
  const std::vector<std::string> results = commit_as_one_batch(first, batch);
  // The replay keeps its own error; everything that had audited fails with the sync.
  EXPECT_EQ(results, (std::vector<std::string>{"audit_unavailable", "audit_unavailable", "replay",
                                               "audit_unavailable"}));
  EXPECT_EQ(audit.durable().size(), 1u);  // only the blocker's

  reopen();
  EXPECT_EQ(members_of(0), (std::vector<std::string>{member_name(1)}));
  EXPECT_TRUE(members_of(1).empty());
  // Nothing of the batch was recorded: admitted now, not retransmissions or replays.
  EXPECT_EQ(admit(request(1, 2)), "admitted");
  EXPECT_EQ(admit(request(0, 3)), "admitted");
  EXPECT_EQ(members_of(0), (std::vector<std::string>{member_name(1), member_name(3)}));
}

// Many threads admit into shared and separate conferences, each request sent twice
// (retransmission) and some envelopes reused by another request (replay), with bridges
// binding concurrently. Every result must be the one some sequential order gives, every
// acknowledged admission audited once and present after a reopen.
TEST_P(GroupCommitTest, ConcurrentAdmissionsRetransmissionsReplaysAndBindings) {
  constexpr int kRequests = 96;
  constexpr int kConferences = 6;
  constexpr int kThreads = 8;
  struct Attempt {
    int request;  // for results
    Admission admission;
  };
  std::vector<Attempt> attempts;
  std::map<int, int> replayed;  // replaying request -> the request whose envelope it reuses
  for (int n = 0; n < kRequests; ++n) {
    attempts.push_back({n, request(n % kConferences, n)});
    attempts.push_back({n, request(n % kConferences, n)});  // retransmission
    if (n % 4 == 0) {
      const int twin = 1000 + n;
      replayed[twin] = n;
      attempts.push_back({twin, replay_of(request(n % kConferences, n), n % kConferences, twin)});
    }
  }
  std::shuffle(attempts.begin(), attempts.end(), std::mt19937(7));
  std::map<int, std::vector<std::string>> expected_members;  // conference -> members
  ASSERT_EQ(admit(request(0, 5000)), "admitted");            // conference 0 exists for the bridges
  expected_members[0].push_back(member_name(5000));

  std::mutex results_mutex;
  std::map<int, std::vector<std::string>> results;
  std::map<std::string, std::vector<std::string>> bindings;  // bridge -> results
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < attempts.size(); i += kThreads) {
        const std::string result = admit(attempts[i].admission);
        std::lock_guard lock(results_mutex);
        results[attempts[i].request].push_back(result);
      }
      // Then every thread's bridge tries to bind conference 0.
      const std::string bridge = "sip:bridge" + std::to_string(t) + "@conf.example.net";
      std::string result = "bound";
      try {
        registry->bind_for_release(
            request(0, 0).conference_id, bridge, kNow,
            [&](const kms::Conference&) {
              audit.append({"key_release", "ok", {{"member", bridge}}});
            },
            &audit);
      } catch (const kms::ProtocolError& error) {
        result = std::string(kms::error_code_name(error.code()));
      }
      std::lock_guard lock(results_mutex);
      bindings[bridge].push_back(result);
    });
  }
  for (std::thread& thread : threads) thread.join();

  for (int n = 0; n < kRequests; ++n) {
    std::vector<std::string> mine = results[n];
    std::sort(mine.begin(), mine.end());
    const bool has_twin = n % 4 == 0;
    const bool twin_won = has_twin && results[1000 + n] == std::vector<std::string>{"admitted"};
    if (twin_won) {
      EXPECT_EQ(mine, (std::vector<std::string>{"replay", "replay"})) << n;
      EXPECT_EQ(durable_events_for(member_name(n)), 0u) << n;
      expected_members[n % kConferences].push_back(member_name(1000 + n));
    } else {
      EXPECT_EQ(mine, (std::vector<std::string>{"admitted", "retransmission"})) << n;
      if (has_twin) {
        EXPECT_EQ(results[1000 + n], std::vector<std::string>{"replay"}) << n;
      }
      EXPECT_EQ(durable_events_for(member_name(n)), 2u) << n;  // admission + retransmission
      expected_members[n % kConferences].push_back(member_name(n));
    }
  }
  int bound = 0;
  for (const auto& [bridge, result] : bindings) {
    ASSERT_EQ(result.size(), 1u);
    if (result[0] == "bound") {
      ++bound;
      EXPECT_EQ(durable_events_for(bridge), 1u);
    } else {
      EXPECT_EQ(result[0], "bridge_not_authorized") << bridge;
      EXPECT_EQ(durable_events_for(bridge), 0u);
    }
  }
  EXPECT_EQ(bound, 1);
  EXPECT_EQ(audit.pending(), 0u);
  const kms::GroupCommitStats stats = registry->group_commit_stats();
  EXPECT_EQ(stats.writes, attempts.size() + kThreads + 1);
  EXPECT_LE(stats.batches, stats.writes);
  RecordProperty("batches", std::to_string(stats.batches));
  RecordProperty("largest_batch", std::to_string(stats.largest_batch));

  reopen();
  for (int c = 0; c < kConferences; ++c) {
    std::vector<std::string> members = members_of(c);
    std::sort(members.begin(), members.end());
    std::sort(expected_members[c].begin(), expected_members[c].end());
    EXPECT_EQ(members, expected_members[c]) << "conference " << c;
  }
  const auto conference = registry->find(request(0, 0).conference_id);
  ASSERT_TRUE(conference);
  ASSERT_TRUE(conference->bridge_id);
  EXPECT_EQ(bindings[*conference->bridge_id], std::vector<std::string>{"bound"});
}

TEST_P(GroupCommitTest, MaxBatchBoundsTheGroup) {
  kms::RegistryOptions options;
  options.max_batch = 2;
  registry.reset();
  registry = kms::open_conference_registry(path, options);
  const std::vector<Admission> batch = {request(1, 2), request(1, 3), request(1, 4), request(1, 5),
                                        request(1, 6)};
  const std::vector<std::string> results = commit_as_one_batch(request(0, 1), batch);
  EXPECT_EQ(results, std::vector<std::string>(batch.size(), "admitted"));
  const kms::GroupCommitStats stats = registry->group_commit_stats();
  EXPECT_EQ(stats.largest_batch, 2u);
  EXPECT_EQ(stats.batches, 4u);  // the blocker, then 2 + 2 + 1
  reopen();
  EXPECT_EQ(members_of(1).size(), batch.size());
}

// SQLite: the registry's own thread checkpoints the WAL (no COMMIT does it on a request's
// time); every admission is still there after a reopen. PostgreSQL has no WAL of ours.
TEST_P(GroupCommitTest, TheSqliteWalIsCheckpointedByTheRegistrysThreadNotByACommit) {
  kms::RegistryOptions options;
  options.checkpoint_interval_ms = 10;
  registry.reset();
  registry = kms::open_conference_registry(path, options);
  for (int n = 0; n < 50; ++n) EXPECT_EQ(admit(request(n, n)), "admitted");
  if (GetParam() == testsupport::DatabaseBackend::postgresql) {
    EXPECT_EQ(registry->checkpoint_stats().checkpoints, 0u);
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (registry->checkpoint_stats().checkpoints == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no checkpoint";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(registry->checkpoint_stats().failures, 0u);
  EXPECT_GT(registry->checkpoint_stats().wal_pages, 0);
  reopen();
  for (int n = 0; n < 50; ++n) EXPECT_EQ(members_of(n), (std::vector<std::string>{member_name(n)}));
}

INSTANTIATE_TEST_SUITE_P(Backends, GroupCommitTest, KMS_DATABASE_BACKENDS);

}  // namespace
