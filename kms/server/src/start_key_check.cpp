#include "start_key_check.h"

#include "tokens/key_check.h"
#include "tokens/key_check_store.h"

namespace kms::server {

void check_token_keys_at_start(tokens::TokenContext& token, const std::string& database,
                               const std::string& node_name, Logger& logger) {
  tokens::KeyCheckStore store(database);
  const auto results = tokens::check_key_checks(token, store, {"kmsd start", node_name});
  std::string recorded, matching;
  for (const tokens::KeyCheckResult& result : results) {
    const std::string item = result.label + " " + result.kcv;
    if (result.outcome == tokens::KeyCheckOutcome::recorded) {
      recorded += (recorded.empty() ? "" : ", ") + item;
    } else if (result.outcome == tokens::KeyCheckOutcome::matches) {
      matching += (matching.empty() ? "" : ", ") + item;
    } else {
      logger.warn("key check: not checked", {{"key", result.label}, {"detail", result.detail}});
    }
  }
  if (!recorded.empty()) {
    logger.info(
        "key check: none recorded for these keys; this token's values are now recorded "
        "in the database",
        {{"keys", recorded}, {"node", node_name}});
  }
  if (!matching.empty()) {
    logger.info("key check: the token's KMS keys match the values recorded in the database",
                {{"keys", matching}});
  }
  if (recorded.empty() && matching.empty()) {
    logger.warn("key check: no KMS key of this token could be checked");
  }
}

}  // namespace kms::server
