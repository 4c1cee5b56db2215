// KeyStore::resolve (cache hit, cache miss = unwrap + later destroy) and the in-token KDF,
// on a fresh SoftHSM token (profile aes-ecb-sha256) or NSS softoken (sp800-108-cmac).
// Argument 0 = SoftHSM, 1 = NSS. One token per process at a time: each benchmark opens its
// own and keeps it for all its iterations.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "software_kdf.h"
#include "support/test_token.h"
#include "token_setup.h"
#include "token_steps.h"
#include "tokens/kdf.h"
#include "tokens/key_store.h"
#include "tokens/key_templates.h"
#include "tokens/token_context.h"

namespace {

using tokens::IdentityKind;

struct Fixture {
  std::unique_ptr<testsupport::TestToken> token;
  std::unique_ptr<testsupport::TempDir> dir;
  std::unique_ptr<tokens::TokenContext> context;
  std::unique_ptr<tokens::KeyDatabase> database;

  explicit Fixture(testsupport::TokenKind kind, int subscribers) {
    token = testsupport::TestToken::create(kind);
    dir = std::make_unique<testsupport::TempDir>("kms-tokens-bench");
    const tokens::TokenConfig config = tokentest::config_for(*token, dir->path() + "/kms.db");
    context = tokens::TokenContext::open(config);
    database = std::make_unique<tokens::KeyDatabase>(config.database);
    context->pool().run([&](hsm::Session& session) {
      tokens::generate_aes_key(session, tokens::templates::master_key(context->profile()));
      const CK_OBJECT_HANDLE storage =
          tokens::generate_aes_key(session, tokens::templates::storage_key(context->profile()));
      tokens::KeyDatabase::Transaction transaction(*database);
      for (int i = 0; i < subscribers; ++i) {
        hsm::ObjectGuard key(
            session, tokens::generate_aes_key(
                         session, tokens::templates::root_key_in_transit(context->profile())));
        hsm::Mechanism wrap(context->profile().wrap_mechanism);
        tokens::IdentityRecord record;
        record.identity = identity(i);
        record.wrapped_key = session.wrap_key(wrap, storage, key.get());
        database->insert(record);
      }
      transaction.commit();
      return 0;
    });
  }
  ~Fixture() {
    database.reset();
    context.reset();
  }
  static std::string identity(int i) { return "sip:user" + std::to_string(i) + "@ims.example.net"; }
};

testsupport::TokenKind kind_of(const benchmark::State& state) {
  return state.range(0) == 0 ? testsupport::TokenKind::softhsm : testsupport::TokenKind::nss;
}

// Cache hit: the database lookup (SQLite index) plus the LRU.
void BM_ResolveHit(benchmark::State& state) {
  Fixture f(kind_of(state), 1);
  tokens::KeyStore store(*f.context, *f.database, 16);
  store.resolve(IdentityKind::subscriber, Fixture::identity(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(store.resolve(IdentityKind::subscriber, Fixture::identity(0)));
  }
  state.SetItemsProcessed(state.iterations());
}

// Cache miss: a cache of one and two identities in turn: every resolve unwraps one key on
// the pinned session and destroys the evicted one.
void BM_ResolveMiss(benchmark::State& state) {
  Fixture f(kind_of(state), 2);
  tokens::KeyStore store(*f.context, *f.database, 1);
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(store.resolve(IdentityKind::subscriber, Fixture::identity(i)));
    i ^= 1;
  }
  state.SetItemsProcessed(state.iterations());
}

// A cache miss as kmsd has it (KeyStore::keep_children with kmsd's own subscriber_keys):
// the store unwraps K_X, derives KE_X and KR_X from it, destroys K_X at once and, at eviction, both
// children.
void BM_ResolveMissWithChildren(benchmark::State& state) {
  Fixture f(kind_of(state), 2);
  tokens::KeyStore store(*f.context, *f.database, 1);
  const tokens::TokenProfile& profile = f.context->profile();
  store.keep_children(IdentityKind::subscriber,
                      [&](hsm::Session& session, CK_OBJECT_HANDLE root, std::string_view identity) {
                        return kms::token_steps::subscriber_keys(session, profile, root, identity);
                      });
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(store.resolve(IdentityKind::subscriber, Fixture::identity(i)));
    i ^= 1;
  }
  state.SetItemsProcessed(state.iterations());
}

// The protocol KDF in the token, from a cached root key: derive + destroy.
void BM_DeriveFromResolved(benchmark::State& state) {
  Fixture f(kind_of(state), 1);
  tokens::KeyStore store(*f.context, *f.database, 16);
  const hsm::Bytes label = testkdf::label("response");
  const hsm::Bytes context(40, 0x5a);
  for (auto _ : state) {
    f.context->pool().run([&](hsm::Session& session) {
      const auto key = store.resolve(IdentityKind::subscriber, Fixture::identity(0));
      hsm::ObjectGuard child(
          session, tokens::derive(session, f.context->profile(), key.handle(), label, context,
                                  tokens::templates::response_key()));
      return 0;
    });
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_ResolveHit)->Arg(0)->Arg(1)->ArgName("nss");
BENCHMARK(BM_ResolveMiss)->Arg(0)->Arg(1)->ArgName("nss");
BENCHMARK(BM_ResolveMissWithChildren)->Arg(0)->Arg(1)->ArgName("nss");
BENCHMARK(BM_DeriveFromResolved)->Arg(0)->Arg(1)->ArgName("nss");

}  // namespace

BENCHMARK_MAIN();
