// Throughput of TokenKeyRequestService::handle and TokenBridgeService::release on a fresh
// SoftHSM (profile 1) or NSS softoken (profile 2) token, in process: token work, SQLite
// registry (WAL, synchronous=FULL) and a no-op audit sink. Envelopes are made before the
// timed loop. Run: build/bench/kms/kms_service_bench
#include <benchmark/benchmark.h>

#include "kms/client/crypto.h"
#include "testbed.h"

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

struct Bench {
  NullAudit audit;
  std::unique_ptr<kmstest::Testbed> bed;
  Bytes k_a = random_key(), k_b = random_key(), bridge_key = random_key();
  explicit Bench(testsupport::TokenKind kind, bool sync_every_commit = true) {
    kmstest::TestbedOptions options;
    options.audit = &audit;
    options.registry.sync_every_commit = sync_every_commit;
    bed = std::make_unique<kmstest::Testbed>(kind, options);
    bed->add_subscriber("sip:alice@ims.example.net", k_a);
    bed->add_subscriber("sip:bob@ims.example.net", k_b);
    bed->add_bridge("sip:bridge1@conf.example.net", bridge_key);
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

}  // namespace

BENCHMARK_MAIN();
