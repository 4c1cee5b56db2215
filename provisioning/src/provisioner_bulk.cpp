// Provisioner: bulk import of keys wrapped under the transport key, in batches.
#include <algorithm>

#include "encoding.h"
#include "errors.h"
#include "hsm/error.h"
#include "provisioner.h"
#include "token_objects.h"
#include "tokens/key_templates.h"

namespace provisioning {

using tokens::IdentityKind;
using namespace steps;

ImportResult Provisioner::import_bulk(IdentityKind kind, const BulkFile& file,
                                      std::size_t batch_size) {
  ImportResult result;
  result.unit = file.unit;
  result.failed = file.problems;
  if (batch_size == 0) batch_size = 1;
  hsm::SessionPool::Lease lease = token().pool().acquire();
  hsm::Session& session = lease.session();
  const tokens::TokenProfile& profile = token().profile();
  require_kms_key(session, tokens::transport_key_ref());
  require_kms_key(session, tokens::storage_key_ref());

  for (std::size_t start = 0; start < file.entries.size(); start += batch_size) {
    const std::size_t end = std::min(file.entries.size(), start + batch_size);
    tokens::KeyDatabase::Transaction transaction(database());
    std::vector<hsm::ObjectGuard> objects;  // token mode, released after commit
    std::size_t imported = 0;
    for (std::size_t i = start; i < end; ++i) {
      const BulkEntry& entry = file.entries[i];
      try {
        require_ims_identity(entry.identity);
        const std::string what = describe(kind, entry.identity);
        auto wrapped = decode_blob(entry.wrapped_key);
        if (!wrapped) throw BadKeyMaterialError("wrapped_key is neither hex nor base64");
        if (database().find(kind, entry.identity)) {
          throw AlreadyExistsError(what + " already exists");
        }
        hsm::ObjectGuard in_transit = unwrap_transported(session, profile, *wrapped, what);
        Stored stored =
            store_root_key(session, profile, mode_, kind, entry.identity, 1, in_transit.get());
        database().insert(
            new_identity_record(kind, entry.identity, mode_, std::move(stored.wrapped)));
        if (stored.object.get() != CK_INVALID_HANDLE) objects.push_back(std::move(stored.object));
        ++imported;
      } catch (const InvalidIdentityError& error) {  // the line's fault: skipped, reported
        result.failed.push_back({entry.number, entry.identity, error.what()});
      } catch (const BadKeyMaterialError& error) {
        result.failed.push_back({entry.number, entry.identity, error.what()});
      } catch (const AlreadyExistsError& error) {
        result.failed.push_back({entry.number, entry.identity, error.what()});
      } catch (const tokens::DuplicateIdentityError& error) {
        result.failed.push_back({entry.number, entry.identity, error.what()});
      }
    }
    transaction.commit();
    for (auto& object : objects) object.release();
    result.imported += imported;
  }
  std::sort(result.failed.begin(), result.failed.end(),
            [](const BulkProblem& a, const BulkProblem& b) { return a.number < b.number; });
  return result;
}

}  // namespace provisioning
