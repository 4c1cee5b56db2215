// Google Benchmark of hsm::SessionPool operations against a fresh SoftHSM token (created in
// a temp folder at start): AES-GCM decrypt, derive + destroy, RFC 5649 wrap, acquire/release,
// each with a token-object key and with a session-object copy of it, on 1 and 2 threads.
// Results and the command line: docs/BENCHMARKS.md.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>

#include "hsm/session_pool.h"
#include "hsm/uri.h"
#include "test_token.h"

namespace {

using hsm::AttributeTemplate;
using hsm::Bytes;
using hsm::Mechanism;
using hsm::Session;

struct Keys {
  CK_OBJECT_HANDLE aead;    // CKA_ENCRYPT + CKA_DECRYPT
  CK_OBJECT_HANDLE master;  // CKA_DERIVE
  CK_OBJECT_HANDLE wrap;    // CKA_WRAP
  CK_OBJECT_HANDLE media;   // a 32-byte generic secret to wrap
};

struct Environment {
  std::unique_ptr<testsupport::TestToken> token;
  std::shared_ptr<hsm::Module> module;
  std::unique_ptr<hsm::SessionPool> pool;
  std::unique_ptr<hsm::SessionPool> unvalidated_pool;  // validate_on_acquire = false
  Keys token_keys{};
  Keys session_keys{};
  Bytes iv = Bytes(12, 0x42);
  Bytes aad = Bytes(64, 0x61);
  Bytes ciphertext;  // 32-byte plaintext + tag under token_keys.aead (same key value)
};
Environment* env = nullptr;

AttributeTemplate aes_template(bool token, std::initializer_list<CK_ATTRIBUTE_TYPE> purposes) {
  AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_ulong(CKA_VALUE_LEN, 32)
      .set_bool(CKA_TOKEN, token)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, false);
  for (auto purpose : purposes) t.set_bool(purpose, true);
  return t;
}

AttributeTemplate derived_template() {
  AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
      .set_ulong(CKA_VALUE_LEN, 32)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, true);
  return t;
}

void set_up() {
  env = new Environment();
  env->token = testsupport::TestToken::create(testsupport::TokenKind::softhsm);
  env->module = hsm::Module::load(env->token->module_config());
  const auto slot = hsm::TokenUri::parse(env->token->uri()).select(*env->module).slot;
  hsm::PoolConfig config;
  config.max_sessions = 4;
  env->pool = std::make_unique<hsm::SessionPool>(env->module, slot, env->token->user_pin(), config);
  config.validate_on_acquire = false;
  env->unvalidated_pool =
      std::make_unique<hsm::SessionPool>(env->module, slot, env->token->user_pin(), config);

  env->pool->run_pinned([](Session& s) {
    Mechanism keygen(CKM_AES_KEY_GEN);
    Keys& t = env->token_keys;
    t.aead = s.generate_key(keygen, aes_template(true, {CKA_ENCRYPT, CKA_DECRYPT}));
    t.master = s.generate_key(keygen, aes_template(true, {CKA_DERIVE}));
    t.wrap = s.generate_key(keygen, aes_template(true, {CKA_WRAP}));
    auto derive = Mechanism::aes_ecb_encrypt_data(Bytes(32, 7));
    t.media = s.derive_key(derive, t.master, derived_template());
    // Session-object copies of the same keys (C_CopyObject with CKA_TOKEN=FALSE).
    AttributeTemplate to_session;
    to_session.set_bool(CKA_TOKEN, false);
    Keys& c = env->session_keys;
    c.aead = s.copy_object(t.aead, to_session);
    c.master = s.copy_object(t.master, to_session);
    c.wrap = s.copy_object(t.wrap, to_session);
    c.media = t.media;
    auto gcm = Mechanism::aes_gcm(env->iv, env->aad);
    env->ciphertext = s.encrypt(gcm, t.aead, Bytes(32, 0x5a));
    return 0;
  });
}

const Keys& keys(const benchmark::State& state) {
  return state.range(0) == 0 ? env->token_keys : env->session_keys;
}

void BM_GcmDecrypt(benchmark::State& state) {
  const CK_OBJECT_HANDLE key = keys(state).aead;
  for (auto _ : state) {
    auto plaintext = env->pool->run([&](Session& s) {
      auto gcm = Mechanism::aes_gcm(env->iv, env->aad);
      return s.decrypt(gcm, key, env->ciphertext);
    });
    benchmark::DoNotOptimize(plaintext.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_DeriveDestroy(benchmark::State& state) {
  const CK_OBJECT_HANDLE master = keys(state).master;
  const Bytes data(32, 0x33);
  for (auto _ : state) {
    env->pool->run([&](Session& s) {
      auto derive = Mechanism::aes_ecb_encrypt_data(data);
      hsm::ObjectGuard child(s, s.derive_key(derive, master, derived_template()));
      return child.get();
    });
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Wrap(benchmark::State& state) {
  const Keys& k = keys(state);
  for (auto _ : state) {
    auto blob = env->pool->run([&](Session& s) {
      Mechanism kwp(CKM_AES_KEY_WRAP_PAD);
      return s.wrap_key(kwp, k.wrap, k.media);
    });
    benchmark::DoNotOptimize(blob.data());
  }
  state.SetItemsProcessed(state.iterations());
}

// The whole KMS response step: derive a media key, wrap it, destroy it.
void BM_DeriveWrapDestroy(benchmark::State& state) {
  const Keys& k = keys(state);
  const Bytes data(32, 0x44);
  for (auto _ : state) {
    auto blob = env->pool->run([&](Session& s) {
      auto derive = Mechanism::aes_ecb_encrypt_data(data);
      hsm::ObjectGuard media(s, s.derive_key(derive, k.master, derived_template()));
      Mechanism kwp(CKM_AES_KEY_WRAP_PAD);
      return s.wrap_key(kwp, k.wrap, media.get());
    });
    benchmark::DoNotOptimize(blob.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_AcquireRelease(benchmark::State& state) {
  hsm::SessionPool& pool = state.range(0) == 0 ? *env->pool : *env->unvalidated_pool;
  for (auto _ : state) {
    auto lease = pool.acquire();
    benchmark::DoNotOptimize(lease.session().handle());
  }
  state.SetItemsProcessed(state.iterations());
}

// Both variants of an A/B argument, with 1 and 2 threads, in wall time.
void ab_on_one_and_two_threads(benchmark::internal::Benchmark* bench, const char* name) {
  bench->ArgName(name)->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();
}
// Arg 0: token-object keys, 1: session-object copies.
void session_key_variants(benchmark::internal::Benchmark* bench) {
  ab_on_one_and_two_threads(bench, "session_key");
}
// Arg 0: C_GetSessionInfo on every acquire (default), 1: no validation.
void validation_variants(benchmark::internal::Benchmark* bench) {
  ab_on_one_and_two_threads(bench, "unvalidated");
}

BENCHMARK(BM_GcmDecrypt)->Apply(session_key_variants);
BENCHMARK(BM_DeriveDestroy)->Apply(session_key_variants);
BENCHMARK(BM_Wrap)->Apply(session_key_variants);
BENCHMARK(BM_DeriveWrapDestroy)->Apply(session_key_variants);
BENCHMARK(BM_AcquireRelease)->Apply(validation_variants);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  set_up();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  delete env;
  return 0;
}
