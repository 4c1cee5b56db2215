// Provisioner: bulk import of keys wrapped under the transport key, chunk by chunk
// (docs/OPERATIONS.md "Bulk import format"). Per chunk of `batch_size` entries:
//  1. checks that need no token: the identity, the key's encoding and size, and whether the
//     identity is in the database already (reads, no write lock);
//  2. the token work, in wrapped mode spread over the pool's sessions (one thread each; on
//     SoftHSM each extra thread on an instance of its own, see Lane):
//     unwrap under the transport key, check the length, wrap under the storage key, destroy
//     the key in transit: 4 token calls per key, the two KMS keys found once (WorkingKeys,
//     not a C_FindObjects per key). Token mode creates a token object per key, on one
//     session, kept by an ObjectGuard until the commit;
//  3. one database transaction inserts the chunk: the write lock is held for the inserts
//     only, never during token work (kmsd's writes to the same SQLite file wait less).
// Wrapped mode overlaps them: phase 2 of chunk k runs beside phase 3 of chunk k - 1 and
// phase 1 of chunk k + 1 (see the pipeline below).
// A chunk is committed whole or not at all, so a subscriber is never half imported; a
// failure that is not a line's own (token, database) stops the import after the chunks
// committed so far, which on_commit has reported.
#include <algorithm>
#include <array>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "encoding.h"
#include "errors.h"
#include "hsm/error.h"
#include "provisioner.h"
#include "token_objects.h"
#include "tokens/key_store.h"
#include "tokens/key_templates.h"

namespace provisioning {

using tokens::IdentityKind;
using namespace steps;

namespace {

// One entry of a chunk on its way through the three phases.
struct Pending {
  const BulkEntry* entry = nullptr;
  hsm::Bytes transported;  // decoded; under the transport key
  Stored stored;           // after the token phase
  std::optional<std::string> problem;
  bool skipped = false;  // already in the database, and skip_existing
  bool recheck = false;  // repeats an identity of the chunk before: checked at its insert
};

// The transport and storage keys as the token phase uses them: session-object copies
// (C_CopyObject with CKA_TOKEN=FALSE, nothing else changed, on the pinned session, once per
// session-object generation) where the token permits, else the token objects through the
// pool's handle cache. NSS softoken decrypts a token object's value under the database
// password (PBKDF2) on every use, about 3 ms: two uses per key made the import ~100/s; the
// copies make it one decrypt per import. SoftHSM refuses to copy (CKA_COPYABLE=FALSE,
// CKR_ACTION_PROHIBITED): there the token objects are used, as kmsd does with M
// (docs/ARCHITECTURE.md "Key store"). The copies are destroyed with this object.
class WorkingKeys {
 public:
  explicit WorkingKeys(hsm::SessionPool& pool) : pool_(pool) {}

  struct Handles {
    CK_OBJECT_HANDLE transport = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE storage = CK_INVALID_HANDLE;
  };
  // Inside a pool.run() operation on `session` (thread-safe).
  Handles get(hsm::Session& session) {
    std::lock_guard lock(mutex_);
    if (!refused_ && (!transport_ || !transport_->current() || !storage_->current())) copy();
    if (refused_) {
      return {pool_.resolve(session, tokens::transport_key_ref()),
              pool_.resolve(session, tokens::storage_key_ref())};
    }
    return {transport_->handle(), storage_->handle()};
  }

 private:
  void copy() {
    transport_.reset();
    storage_.reset();
    pool_.run_pinned([&](hsm::Session& pinned) {
      const std::uint64_t generation = pool_.session_object_generation();
      // ObjectGuards until both exist (a StoredKey would destroy through run_pinned: not
      // from inside it).
      std::array<hsm::ObjectGuard, 2> copies;
      const std::array<hsm::KeyRef, 2> refs{tokens::transport_key_ref(), tokens::storage_key_ref()};
      for (std::size_t i = 0; i < refs.size(); ++i) {
        const CK_OBJECT_HANDLE original = pool_.resolve(pinned, refs[i]);
        hsm::AttributeTemplate changes;
        changes.set_bool(CKA_TOKEN, false);
        try {
          copies[i] = hsm::ObjectGuard(pinned, pinned.copy_object(original, std::move(changes)));
        } catch (const hsm::Error& error) {
          if (error.recoverable()) throw;  // run_pinned recovers and runs this again
          refused_ = true;                 // a first copy made is destroyed with `copies`
          return 0;
        }
      }
      transport_ =
          std::make_shared<const tokens::StoredKey>(&pool_, copies[0].release(), true, generation);
      storage_ =
          std::make_shared<const tokens::StoredKey>(&pool_, copies[1].release(), true, generation);
      return 0;
    });
  }

  hsm::SessionPool& pool_;
  std::mutex mutex_;
  bool refused_ = false;  // the token refused a copy: the token objects from then on
  std::shared_ptr<const tokens::StoredKey> transport_, storage_;
};

// One worker's way to the token: the pool it runs on and its working keys there. Where one
// instance of the library runs operations on the same token object nearly one at a time
// (the quirk serialises_token_object_use: SoftHSM), each worker after the first gets an
// instance of its own (TokenContext::Instance::separate), which on two cores made the
// import 1.49-1.56x one worker's rate instead of 1.04x (docs/OPERATIONS.md "Bulk import
// format").
struct Lane {
  std::unique_ptr<tokens::TokenContext> own;  // that instance; null: the shared one
  hsm::SessionPool* pool = nullptr;
  std::unique_ptr<WorkingKeys> keys;  // destroyed before `own`, whose pool they use
};

std::vector<Lane> open_lanes(tokens::TokenContext& shared, std::size_t workers,
                             ImportResult& result) {
  std::vector<Lane> lanes(workers);
  for (std::size_t worker = 0; worker < workers; ++worker) {
    Lane& lane = lanes[worker];
    if (worker > 0 && shared.profile().quirks.serialises_token_object_use) {
      try {
        lane.own =
            tokens::TokenContext::open(shared.config(), tokens::TokenContext::Instance::separate);
      } catch (const hsm::Error& error) {
        // Slower, not wrong: the worker shares the instance (e.g. no memfd_create here).
        result.warnings.push_back(
            "bulk import: worker " + std::to_string(worker) +
            " shares the token instance (a separate one did not open: " + error.what() + ")");
      }
    }
    lane.pool = lane.own ? &lane.own->pool() : &shared.pool();
    lane.keys = std::make_unique<WorkingKeys>(*lane.pool);
  }
  return lanes;
}

// Runs `body` and turns the errors that are the line's own fault into its problem; every
// other error (token, database) propagates.
template <typename Body>
void for_line(Pending& pending, Body&& body) {
  try {
    body();
  } catch (const InvalidIdentityError& error) {
    pending.problem = error.what();
  } catch (const BadKeyMaterialError& error) {
    pending.problem = error.what();
  } catch (const AlreadyExistsError& error) {
    pending.problem = error.what();
  } catch (const tokens::DuplicateIdentityError& error) {
    pending.problem = error.what();
  }
}

}  // namespace

ImportResult Provisioner::import_bulk(IdentityKind kind, const BulkFile& file,
                                      const BulkImportSettings& settings) {
  ImportResult result;
  result.unit = file.unit;
  result.failed = file.problems;
  const std::size_t batch_size = std::max<std::size_t>(1, settings.batch_size);
  hsm::SessionPool& pool = token().pool();
  const tokens::TokenProfile& profile = token().profile();
  const hsm::KeyRef transport_ref = tokens::transport_key_ref();
  const hsm::KeyRef storage_ref = tokens::storage_key_ref();
  pool.run([&](hsm::Session& session) {  // a clear error for a token without them
    require_kms_key(session, transport_ref);
    require_kms_key(session, storage_ref);
    return 0;
  });
  const bool token_mode = mode_ == tokens::KeyStoreMode::token;
  // Token mode keeps one session for the whole import: its new token objects belong to it
  // until their chunk commits. Wrapped mode needs a session only during the token phase.
  std::optional<hsm::SessionPool::Lease> token_mode_lease;
  if (token_mode) token_mode_lease.emplace(pool.acquire());
  const std::size_t workers =
      token_mode ? 1 : std::clamp<std::size_t>(settings.threads, 1, pool.config().max_sessions);
  std::vector<Lane> lanes = open_lanes(token(), workers, result);
  result.token_instances = 1;
  for (const Lane& lane : lanes) result.token_instances += lane.own != nullptr;

  // The token phase for the entries worker, worker + workers, ... of `chunk`.
  const auto token_work = [&](hsm::Session& session, WorkingKeys& keys, std::vector<Pending>& chunk,
                              std::size_t worker) {
    const WorkingKeys::Handles handles = keys.get(session);
    for (std::size_t i = worker; i < chunk.size(); i += workers) {
      Pending& pending = chunk[i];
      if (pending.problem || pending.skipped) continue;
      pending.stored = Stored{};  // a re-run after a recovery starts the entry afresh
      for_line(pending, [&] {
        const std::string what = describe(kind, pending.entry->identity);
        hsm::ObjectGuard in_transit =
            unwrap_transported(session, profile, pending.transported, what, handles.transport);
        pending.stored = store_root_key(session, profile, mode_, kind, pending.entry->identity, 1,
                                        in_transit.get(), handles.storage);
      });
    }
  };
  // Wrapped mode: one thread per extra worker, each on its own pooled session (of its own
  // instance where the token serialises one instance); run() repairs a lost session and
  // re-runs that worker's share.
  const auto run_token_phase = [&](std::vector<Pending>& chunk) {
    if (token_mode) return token_work(token_mode_lease->session(), *lanes[0].keys, chunk, 0);
    std::vector<std::exception_ptr> errors(workers);
    const auto share = [&](std::size_t worker) {
      try {
        Lane& lane = lanes[worker];
        lane.pool->run([&](hsm::Session& session) {
          token_work(session, *lane.keys, chunk, worker);
          return 0;
        });
      } catch (...) {
        errors[worker] = std::current_exception();
      }
    };
    {
      std::vector<std::jthread> threads;  // joined on the way out, also if one fails to start
      for (std::size_t worker = 1; worker < workers && worker < chunk.size(); ++worker) {
        threads.emplace_back(share, worker);
      }
      share(0);
    }
    for (const auto& error : errors) {
      if (error) std::rethrow_exception(error);
    }
  };

  // An identity in the database already: skipped or the line's failure.
  const auto require_absent = [&](Pending& pending) {
    if (!database().find(kind, pending.entry->identity)) return;
    if (!settings.skip_existing) {
      throw AlreadyExistsError(describe(kind, pending.entry->identity) + " already exists");
    }
    pending.skipped = true;
  };
  // Phase 1 for entries [start, end). An identity also in `in_flight` (the chunk before,
  // not committed yet) is checked against the database at its insert instead, once that
  // chunk is in: the answer is the one a sequential import would have given.
  const auto check_chunk = [&](std::vector<Pending>& chunk, std::size_t start, std::size_t end,
                               const std::vector<Pending>& in_flight) {
    // Identities only: the token phase may be writing the other fields of `in_flight`.
    std::unordered_set<std::string_view> earlier;
    for (const Pending& pending : in_flight) earlier.insert(pending.entry->identity);
    chunk.clear();
    chunk.resize(end - start);
    for (std::size_t i = start; i < end; ++i) {
      Pending& pending = chunk[i - start];
      pending.entry = &file.entries[i];
      for_line(pending, [&] {
        require_ims_identity(pending.entry->identity);
        auto decoded = decode_blob(pending.entry->wrapped_key);
        if (!decoded) throw BadKeyMaterialError("wrapped_key is neither hex nor base64");
        pending.transported = std::move(*decoded);
        require_wrapped_aes256(pending.transported, describe(kind, pending.entry->identity));
        if (earlier.count(pending.entry->identity) != 0) {
          pending.recheck = true;
        } else {
          require_absent(pending);
        }
      });
    }
  };
  // Phase 3: one transaction for the chunk that ends with entry `end` - 1, then the report.
  const auto commit_chunk = [&](std::vector<Pending>& chunk, std::size_t end) {
    std::size_t imported = 0;
    {
      tokens::KeyDatabase::Transaction transaction(database());
      for (Pending& pending : chunk) {
        if (pending.problem || pending.skipped) continue;
        // A repeat of an identity earlier in the file: the first is the one imported.
        for_line(pending, [&] {
          if (pending.recheck) {
            require_absent(pending);
            if (pending.skipped) return;
          }
          // Every entry that reaches here went through the token phase: never a row without
          // its key.
          if (!token_mode && pending.stored.wrapped.empty()) {
            throw std::logic_error("bulk import: no stored key for " + pending.entry->identity);
          }
          database().insert(new_identity_record(kind, pending.entry->identity, mode_,
                                                std::move(pending.stored.wrapped)));
        });
        if (pending.problem || pending.skipped) {
          pending.stored.object = hsm::ObjectGuard();  // token mode: its object goes
        } else {
          ++imported;
        }
      }
      transaction.commit();
    }
    for (Pending& pending : chunk) {
      if (pending.problem) {
        result.failed.push_back({pending.entry->number, pending.entry->identity, *pending.problem});
      } else if (pending.skipped) {
        ++result.skipped;
      } else {
        pending.stored.object.release();  // committed: the token object stays
      }
    }
    result.imported += imported;
    result.committed_through = file.entries[end - 1].number;
    if (settings.on_commit) settings.on_commit(result);
  };

  const std::size_t chunks = (file.entries.size() + batch_size - 1) / batch_size;
  const auto end_of = [&](std::size_t k) {
    return std::min(file.entries.size(), (k + 1) * batch_size);
  };
  std::vector<Pending> previous, current, next;
  if (token_mode) {  // one step after the other: its objects live on one session
    for (std::size_t k = 0; k < chunks; ++k) {
      check_chunk(current, k * batch_size, end_of(k), previous);
      run_token_phase(current);
      commit_chunk(current, end_of(k));
    }
  } else {
    // A pipeline of three chunks: while the token works on chunk k, one thread commits
    // chunk k - 1 and checks chunk k + 1, so the database work runs on the core the token
    // phase leaves idle. A failure stops the import after the chunks before it (chunk k - 1
    // is committed either way).
    if (chunks > 0) check_chunk(current, 0, end_of(0), previous);
    for (std::size_t k = 0; k < chunks; ++k) {
      std::exception_ptr token_error, database_error;
      {
        std::jthread database_steps([&] {
          try {
            if (k > 0) commit_chunk(previous, end_of(k - 1));
            if (k + 1 < chunks) check_chunk(next, end_of(k), end_of(k + 1), current);
          } catch (...) {
            database_error = std::current_exception();
          }
        });
        try {
          run_token_phase(current);
        } catch (...) {
          token_error = std::current_exception();
        }
      }
      if (database_error) std::rethrow_exception(database_error);  // the earlier chunk's
      if (token_error) std::rethrow_exception(token_error);
      previous.swap(current);
      current.swap(next);
    }
    if (chunks > 0) commit_chunk(previous, end_of(chunks - 1));
  }
  std::sort(result.failed.begin(), result.failed.end(),
            [](const BulkProblem& a, const BulkProblem& b) { return a.number < b.number; });
  return result;
}

}  // namespace provisioning
