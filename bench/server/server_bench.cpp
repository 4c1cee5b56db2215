// Micro-benchmarks: one durable audit record (write + fdatasync, the per-admission floor),
// and parsing/serialising the key-request JSON.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "kms/audit/audit_log.h"
#include "kms/server/wire.h"

namespace {

std::string temp_dir() {
  char pattern[] = "/tmp/kms-bench-XXXXXX";
  return mkdtemp(pattern) ? pattern : "/tmp";
}

void BM_AuditRecordDurable(benchmark::State& state) {
  const std::string dir = temp_dir();
  {
    kms::audit::AuditLog log(dir + "/audit.log");
    const kms::AuditEvent event{"admission",
                                "ok",
                                {{"chair", "sip:alice@ims.example.net"},
                                 {"conference", "00112233445566778899aabbccddeeff"},
                                 {"member", "sip:bob@ims.example.net"},
                                 {"peer", "127.0.0.1:40000"}}};
    for (auto _ : state) log.record(event);
    state.SetItemsProcessed(state.iterations());
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AuditRecordDurable)->UseRealTime()->Threads(1)->Threads(4);

void BM_KeyRequestJsonRoundTrip(benchmark::State& state) {
  const kms::KeyRequest request{"sip:alice@ims.example.net", "sip:bob@ims.example.net",
                                kms::Bytes(120, 0x5a), kms::Bytes(120, 0xa5)};
  for (auto _ : state) {
    const std::string body = kms::wire::key_request_to_json(request);
    benchmark::DoNotOptimize(kms::wire::key_request_from_json(body));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeyRequestJsonRoundTrip);

}  // namespace

BENCHMARK_MAIN();
