// Throughput of TokenKeyRequestService::handle and TokenBridgeService::release on a fresh
// SoftHSM (profile 1) or NSS softoken (profile 2) token, in process: token work, SQLite
// registry (WAL, synchronous=FULL) and a no-op audit sink. Envelopes are made before the
// timed loop. Run: build/bench/kms/kms_service_bench
//
// BM_KeyRequestThreads: admissions from 1-8 threads with and without the registry's group
// commit, with no audit, the real audit log, or a plain file sink with append()/sync().
// BM_BridgeReleaseCommitHold: time a release spends inside the registry's commit.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "interleaving_registry.h"
#include "kms/client/crypto.h"
#include "testbed.h"
#ifdef KMS_HAVE_AUDIT_LOG
#include "kms/audit/audit_log.h"
#endif

namespace {

using kms::client::Bytes;
using kms::client::UeClient;

constexpr auto kSuite = kms::client::Suite::aes_cm_128_hmac_sha1_80;

class NullAudit : public kms::AuditSink {
 public:
  void record(const kms::AuditEvent&) override {}
};

Bytes random_key() {
  const auto key = kms::client::random_bytes(32);
  return Bytes(key.view().begin(), key.view().end());
}

// A plain file sink with the append()/sync() split: write() per event, one fdatasync per
// sync(), no hash chain (to compare with kms::audit::AuditLog, which has the same split).
class AppendSyncFileAudit : public kms::AuditSink {
 public:
  explicit AppendSyncFileAudit(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) {}
  ~AppendSyncFileAudit() override { ::close(fd_); }
  void record(const kms::AuditEvent& event) override {
    append(event);
    sync();
  }
  void append(const kms::AuditEvent& event) override {
    std::string line = event.event + " " + event.outcome;
    for (const auto& [name, value] : event.fields) line += " " + name + "=" + value;
    line += "\n";
    std::lock_guard lock(mutex_);
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      throw kms::AuditUnavailable("bench audit: write failed");
    }
  }
  void sync() override {
    if (::fdatasync(fd_) != 0) throw kms::AuditUnavailable("bench audit: fdatasync failed");
  }

 private:
  int fd_;
  std::mutex mutex_;
};

enum class AuditKind { none = 0, audit_log = 1, append_sync_file = 2 };

struct Bench {
  NullAudit null_audit;
  std::unique_ptr<kms::AuditSink> file_audit;
  std::unique_ptr<kmstest::Testbed> bed;
  Bytes k_a = random_key(), k_b = random_key(), bridge_key = random_key();
  explicit Bench(testsupport::TokenKind kind, bool sync_every_commit = true,
                 std::size_t max_batch = kms::RegistryOptions{}.max_batch,
                 AuditKind audit = AuditKind::none) {
    kmstest::TestbedOptions options;
    options.audit = &null_audit;
    options.registry.sync_every_commit = sync_every_commit;
    options.registry.max_batch = max_batch;
    bed = std::make_unique<kmstest::Testbed>(kind, options);
    bed->add_subscriber("sip:alice@ims.example.net", k_a);
    bed->add_subscriber("sip:bob@ims.example.net", k_b);
    bed->add_bridge("sip:bridge1@conf.example.net", bridge_key);
    const std::string audit_path = bed->dir() + "/audit.jsonl";
    if (audit == AuditKind::append_sync_file) {
      file_audit = std::make_unique<AppendSyncFileAudit>(audit_path);
    }
#ifdef KMS_HAVE_AUDIT_LOG
    if (audit == AuditKind::audit_log)
      file_audit = std::make_unique<kms::audit::AuditLog>(audit_path);
#endif
    if (file_audit) bed->rebuild_services(*file_audit, {});
  }
  kms::KeyRequest request(const kms::client::Secret& r_a) {
    const UeClient a = bed->ue("sip:alice@ims.example.net", k_a);
    const UeClient b = bed->ue("sip:bob@ims.example.net", k_b);
    return {a.identity(), b.identity(), a.chair_envelope(r_a, b.identity(), kSuite),
            b.responder_envelope(UeClient::make_nonce(), a.identity(), kSuite)};
  }
};

// range(0): token (0 SoftHSM, 1 NSS); range(1): registry fsync per admission (1) or not (0).
void BM_KeyRequest(benchmark::State& state) {
  Bench bench(static_cast<testsupport::TokenKind>(state.range(0)), state.range(1) != 0);
  std::vector<kms::KeyRequest> requests;
  for (int i = 0; i < 3000; ++i) requests.push_back(bench.request(UeClient::make_nonce()));
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == requests.size()) {
      state.SkipWithError("out of prepared requests");
      break;
    }
    benchmark::DoNotOptimize(bench.bed->key_requests().handle(requests[next++], {"bench", "r"}));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(next));
}
BENCHMARK(BM_KeyRequest)
    ->ArgsProduct({{0, 1}, {1, 0}})
    ->ArgNames({"nss", "fsync"})
    ->Iterations(2000)
    ->UseRealTime();

// A conference of the chair and one member: two keys re-derived and wrapped per release.
void BM_BridgeRelease2Members(benchmark::State& state) {
  Bench bench(static_cast<testsupport::TokenKind>(state.range(0)));
  const kms::client::Secret r_a = UeClient::make_nonce();
  const auto response = bench.bed->key_requests().handle(bench.request(r_a), {"bench", "r"});
  for (auto _ : state) {
    benchmark::DoNotOptimize(bench.bed->bridges().release("sip:bridge1@conf.example.net",
                                                          response.conference_id, {"bench", "b"}));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BridgeRelease2Members)->Arg(0)->Arg(1)->ArgName("nss")->UseRealTime();

// range(0): group commit (registry max_batch 64) or not (max_batch 1: one transaction and
// one fsync per admission, as before group commit); range(1): AuditKind. SoftHSM,
// synchronous=FULL. Each thread sends its own prepared requests.
constexpr int kRequestsPerThread = 100;
std::unique_ptr<Bench> threaded_bench;
std::vector<kms::KeyRequest> threaded_requests;

void BM_KeyRequestThreads(benchmark::State& state) {
  if (state.thread_index() == 0) {  // the others wait at the loop's start barrier
    const auto audit = static_cast<AuditKind>(state.range(1));
    threaded_bench = std::make_unique<Bench>(testsupport::TokenKind::softhsm, true,
                                             state.range(0) != 0 ? 64 : 1, audit);
    threaded_requests.clear();
    for (int i = 0; i < state.threads() * kRequestsPerThread; ++i) {
      threaded_requests.push_back(threaded_bench->request(UeClient::make_nonce()));
    }
  }
  std::size_t next = static_cast<std::size_t>(state.thread_index() * kRequestsPerThread);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        threaded_bench->bed->key_requests().handle(threaded_requests[next++], {"bench", "r"}));
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {  // the others are past the loop's stop barrier
    const kms::GroupCommitStats stats = threaded_bench->bed->registry().group_commit_stats();
    state.counters["batch"] =
        stats.batches ? static_cast<double>(stats.writes) / static_cast<double>(stats.batches) : 0;
    threaded_bench.reset();
  }
}
BENCHMARK(BM_KeyRequestThreads)
#ifdef KMS_HAVE_AUDIT_LOG
    ->ArgsProduct({{0, 1}, {0, 1, 2}})
#else
    ->ArgsProduct({{0, 1}, {0, 2}})
#endif
    ->ArgNames({"group", "audit"})
    ->Iterations(kRequestsPerThread)
    ->ThreadRange(1, 8)
    ->UseRealTime();

// The commit path alone: SqliteConferenceRegistry::admit from 1-8 threads (no token work),
// each admission audited; range(0): group commit or not; range(1): AuditKind (none or
// append_sync_file: the audit's own fdatasync per batch).
std::unique_ptr<kmstest::Testbed> registry_bed;  // for its directory and registry
std::unique_ptr<kms::AuditSink> registry_audit;

kms::Admission bench_admission(int thread, int n) {
  auto bytes = [&](std::uint8_t tag, std::size_t size) {
    Bytes out(size, tag);
    out[0] = static_cast<std::uint8_t>(thread);
    out[1] = static_cast<std::uint8_t>(n);
    out[2] = static_cast<std::uint8_t>(n >> 8);
    return out;
  };
  kms::Admission a;
  a.conference_id = bytes(1, 16);
  a.conference_id[1] = a.conference_id[2] = 0;  // one conference per thread
  a.chair_id = "sip:alice@ims.example.net";
  a.chair_nonce = hsm::SecureBytes(bytes(2, 32));
  a.chair_key_id = bytes(3, 8);
  a.responder_id = "sip:member" + std::to_string(n) + "@ims.example.net";
  a.responder_nonce = hsm::SecureBytes(bytes(4, 32));
  a.responder_key_id = bytes(5, 8);
  a.profile = 1;
  a.suite = 1;
  a.request_digest = bytes(6, 32);
  a.now = std::time(nullptr);
  a.envelopes[0] = {bytes(7, 32), a.now + 300};
  a.envelopes[1] = {bytes(8, 32), a.now + 300};
  a.conference_expires_at = a.now + 3600;
  return a;
}

void BM_RegistryAdmitThreads(benchmark::State& state) {
  if (state.thread_index() == 0) {
    kmstest::TestbedOptions options;
    options.registry.max_batch = state.range(0) != 0 ? 64 : 1;
    registry_bed = std::make_unique<kmstest::Testbed>(testsupport::TokenKind::softhsm, options);
    if (static_cast<AuditKind>(state.range(1)) == AuditKind::append_sync_file) {
      registry_audit = std::make_unique<AppendSyncFileAudit>(registry_bed->dir() + "/audit.log");
    } else {
      registry_audit = std::make_unique<NullAudit>();
    }
  }
  int n = 0;
  for (auto _ : state) {
    const kms::Admission admission = bench_admission(state.thread_index(), n++);
    registry_bed->registry().admit(
        admission,
        [&](kms::AdmissionOutcome) {
          registry_audit->append({"admission", "ok", {{"member", admission.responder_id}}});
        },
        registry_audit.get());
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    const kms::GroupCommitStats stats = registry_bed->registry().group_commit_stats();
    state.counters["batch"] =
        stats.batches ? static_cast<double>(stats.writes) / static_cast<double>(stats.batches) : 0;
    registry_bed.reset();
    registry_audit.reset();
  }
}
BENCHMARK(BM_RegistryAdmitThreads)
    ->ArgsProduct({{0, 1}, {0, 2}})
    ->ArgNames({"group", "audit"})
    ->Iterations(200)
    ->ThreadRange(1, 8)
    ->UseRealTime();

// How long a release holds the registry's commit (where admissions batched with it wait),
// against the whole release: the token work (2 derives and a wrap per member) runs before
// the commit, which only re-checks the conference and appends the audit record.
// range(0): members including the chair (admitted straight into the registry). SoftHSM.
void BM_BridgeReleaseCommitHold(benchmark::State& state) {
  kmstest::TestbedOptions options;
  NullAudit audit;
  options.audit = &audit;
  kmstest::Testbed bed(testsupport::TokenKind::softhsm, options);
  bed.add_bridge("sip:bridge1@conf.example.net", random_key());
  kms::Admission admission;
  for (int n = 1; n < state.range(0); ++n) {
    admission = bench_admission(0, n);
    bed.registry().admit(admission, [](kms::AdmissionOutcome) {});
  }
  kmstest::InterleavingRegistry registry(bed.registry());
  std::chrono::steady_clock::time_point hook_start;
  std::chrono::nanoseconds in_commit{0};
  registry.before_release_hook = [&] { hook_start = std::chrono::steady_clock::now(); };
  registry.after_release_hook = [&] { in_commit += std::chrono::steady_clock::now() - hook_start; };
  kms::TokenBridgeService bridges(bed.token(), bed.store(), registry, audit);
  for (auto _ : state) {
    const kms::BridgeRelease release =
        bridges.release("sip:bridge1@conf.example.net", admission.conference_id, {"bench", "b"});
    if (release.keys.size() != static_cast<std::size_t>(state.range(0))) {
      state.SkipWithError("wrong member count");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["commit_hook_us"] = benchmark::Counter(
      static_cast<double>(in_commit.count()) / 1000.0 / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_BridgeReleaseCommitHold)
    ->Arg(2)
    ->Arg(16)
    ->ArgName("members")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
