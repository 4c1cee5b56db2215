#include "tokens/key_check.h"

#include <algorithm>

#include "hsm/error.h"
#include "tokens/key_check_value.h"
#include "tokens/key_templates.h"
#include "tokens/unix_time.h"

namespace tokens {
namespace {

RecordedKeyCheck record_of(const TokenContext& token, const KeyCheckOrigin& origin,
                           const std::string& label, const std::string& kcv) {
  return {label,
          kcv,
          token.profile().name,
          unix_now(),
          origin.recorded_by,
          origin.command,
          token.token().label};
}

std::string not_checked_reason(const TokenKeyCheck& check) {
  if (!check.problem.empty()) return "the token could not compute its KCV: " + check.problem;
  if (check.label == kTransportKeyLabel) {
    return "the token holds no check blob for it (a transport key made by init, or NSS "
           "softoken, which keeps no data objects)";
  }
  return "the token lacks the key";
}

[[noreturn]] void throw_mismatch(const TokenContext& token,
                                 std::vector<KeyCheckMismatch> mismatches) {
  std::string message =
      "this token (" + token.token().label + ") holds other KMS keys than the database records: ";
  for (std::size_t i = 0; i < mismatches.size(); ++i) {
    const KeyCheckMismatch& m = mismatches[i];
    message += (i ? "; " : "") + m.label + " has KCV " + m.token_kcv +
               " in this token, the database records " + describe(m.recorded);
    // The master KCV is a KDF output: another profile gives another value for the same key.
    if (m.recorded.profile != token.profile().name) {
      message += " (this node runs profile " + token.profile().name + ")";
    }
  }
  message += ". ";
  message += key_mismatch_advice();
  throw KeyMismatchError(message, std::move(mismatches));
}

}  // namespace

std::string_view outcome_name(KeyCheckOutcome outcome) {
  switch (outcome) {
    case KeyCheckOutcome::recorded:
      return "recorded";
    case KeyCheckOutcome::matches:
      return "matches";
    case KeyCheckOutcome::replaced:
      return "replaced";
    case KeyCheckOutcome::removed:
      return "removed";
    case KeyCheckOutcome::unchanged:
      return "unchanged";
    case KeyCheckOutcome::not_checked:
      break;
  }
  return "not checked";
}

std::string_view key_mismatch_advice() {
  return "Install the deployment's KMS keys in this token (kms-provision clone import with the "
         "ceremony's clone file: docs/OPERATIONS.md \"Cloning the KMS keys\"), or give this "
         "node the database that belongs to its keys. If instead this token's keys are the "
         "right ones and the recorded values are stale, record this token's values with "
         "`kms-provision key-check --record` (every other node then refuses to start until it "
         "holds the same keys)";
}

std::vector<TokenKeyCheck> token_key_checks(TokenContext& token) {
  hsm::SessionPool::Lease lease = token.pool().acquire();
  std::vector<TokenKeyCheck> checks;
  for (const std::string_view label : {kMasterKeyLabel, kStorageKeyLabel, kTransportKeyLabel}) {
    TokenKeyCheck check{std::string(label), std::nullopt, {}};
    try {
      if (const auto kcv = kms_key_check_value(lease.session(), token.profile(), label)) {
        check.kcv = key_check_value_hex(*kcv);
      }
    } catch (const hsm::Error& error) {
      check.problem = error.what();  // e.g. an HSM without CKM_AES_ECB
    }
    checks.push_back(std::move(check));
  }
  return checks;
}

std::vector<KeyCheckResult> check_key_checks(TokenContext& token, KeyCheckStore& store,
                                             const KeyCheckOrigin& origin) {
  std::vector<KeyCheckResult> results;
  std::vector<KeyCheckMismatch> mismatches;
  for (const TokenKeyCheck& check : token_key_checks(token)) {
    KeyCheckResult result{
        check.label, KeyCheckOutcome::not_checked, check.kcv.value_or(""), {}, {}};
    if (!check.kcv) {
      result.detail = not_checked_reason(check);
      if (auto recorded = store.find(check.label)) {
        result.detail += "; the database records " + describe(*recorded);
      }
      results.push_back(std::move(result));
      continue;
    }
    auto recorded = store.record_if_absent(record_of(token, origin, check.label, *check.kcv));
    if (recorded.value.kcv != *check.kcv) {
      mismatches.push_back({check.label, *check.kcv, std::move(recorded.value)});
      continue;
    }
    result.outcome = recorded.inserted ? KeyCheckOutcome::recorded : KeyCheckOutcome::matches;
    result.previous = std::move(recorded.value);
    results.push_back(std::move(result));
  }
  if (!mismatches.empty()) throw_mismatch(token, std::move(mismatches));
  return results;
}

std::vector<KeyCheckResult> record_key_checks(TokenContext& token, KeyCheckStore& store,
                                              const KeyCheckOrigin& origin,
                                              const std::vector<std::string>& replaced_labels) {
  const auto made_here = [&](const std::string& label) {
    return std::find(replaced_labels.begin(), replaced_labels.end(), label) !=
           replaced_labels.end();
  };
  const std::vector<TokenKeyCheck> checks = token_key_checks(token);
  // Kept keys first, without writing: a difference leaves the database as it was.
  std::vector<KeyCheckMismatch> mismatches;
  for (const TokenKeyCheck& check : checks) {
    if (made_here(check.label) || !check.kcv) continue;
    const auto recorded = store.find(check.label);
    if (recorded && recorded->kcv != *check.kcv) {
      mismatches.push_back({check.label, *check.kcv, *recorded});
    }
  }
  if (!mismatches.empty()) throw_mismatch(token, std::move(mismatches));

  std::vector<KeyCheckResult> results;
  for (const TokenKeyCheck& check : checks) {
    KeyCheckResult result{
        check.label, KeyCheckOutcome::not_checked, check.kcv.value_or(""), {}, {}};
    if (!check.kcv) {
      result.detail = not_checked_reason(check);
      // A new key without KCV: the old key's value no longer says anything.
      if (made_here(check.label) && check.problem.empty()) {
        result.previous = store.erase(check.label);
        if (result.previous) result.outcome = KeyCheckOutcome::removed;
      }
    } else if (made_here(check.label)) {
      result.previous = store.replace(record_of(token, origin, check.label, *check.kcv));
      result.outcome = !result.previous                     ? KeyCheckOutcome::recorded
                       : result.previous->kcv == *check.kcv ? KeyCheckOutcome::matches
                                                            : KeyCheckOutcome::replaced;
    } else {
      auto recorded = store.record_if_absent(record_of(token, origin, check.label, *check.kcv));
      if (recorded.value.kcv != *check.kcv) {
        throw_mismatch(token, {{check.label, *check.kcv, std::move(recorded.value)}});
      }
      result.outcome = recorded.inserted ? KeyCheckOutcome::recorded : KeyCheckOutcome::unchanged;
      result.previous = std::move(recorded.value);
    }
    results.push_back(std::move(result));
  }
  return results;
}

}  // namespace tokens
