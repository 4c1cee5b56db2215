// The start-time key check (docs/OPERATIONS.md "The key check at start"): the key check
// values of the KMS keys in this node's token, compared with those recorded in the shared
// database (tokens/key_check_store.h), so that a node whose token holds other keys than
// the deployment's refuses to start instead of serving wrong keys. kms-provision records
// the values when it makes or replaces the keys (record_key_checks); kmsd compares at start
// (check_key_checks) and records them when the database has none yet.
//
// A key is compared when the token can compute its KCV. It cannot for a transport key
// without a check blob in the token (made by `init`, or any transport key on NSS softoken,
// which keeps no data objects), nor when the token refuses a step (e.g. an HSM without
// CKM_AES_ECB): such a key is "not checked" and said so, never a reason to refuse.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tokens/key_check_store.h"
#include "tokens/token_context.h"

namespace tokens {

// The KCV of one KMS key in this token.
struct TokenKeyCheck {
  std::string label;
  std::optional<std::string> kcv;  // hex; nullopt: the token has none for this key
  std::string problem;             // why not, when the token failed computing it
};
// The three KMS keys, in label order. Token failures are per key (in `problem`).
std::vector<TokenKeyCheck> token_key_checks(TokenContext& token);

// Who is recording: kmsd ("kmsd start", its node name) or kms-provision ("kms-provision
// init --force", the host name).
struct KeyCheckOrigin {
  std::string command;
  std::string recorded_by;
};

enum class KeyCheckOutcome {
  recorded,     // none was recorded: this token's value is now
  matches,      // equal to the recorded value
  replaced,     // record_key_checks: another value was recorded before
  removed,      // record_key_checks: the replaced key has no KCV; the old one was dropped
  unchanged,    // record_key_checks: the key was kept; its recorded value left alone
  not_checked,  // the token has no KCV for this key (see `detail`)
};
std::string_view outcome_name(KeyCheckOutcome outcome);

struct KeyCheckResult {
  std::string label;
  KeyCheckOutcome outcome = KeyCheckOutcome::not_checked;
  std::string kcv;                           // this token's (empty when none)
  std::optional<RecordedKeyCheck> previous;  // what was recorded before (replaced, removed)
  std::string detail;                        // not_checked: why
};

// This token holds other keys than those recorded: one entry per differing key.
struct KeyCheckMismatch {
  std::string label;
  std::string token_kcv;
  RecordedKeyCheck recorded;
};
class KeyMismatchError : public std::runtime_error {
 public:
  KeyMismatchError(const std::string& message, std::vector<KeyCheckMismatch> mismatches)
      : std::runtime_error(message), mismatches_(std::move(mismatches)) {}
  const std::vector<KeyCheckMismatch>& mismatches() const noexcept { return mismatches_; }

 private:
  std::vector<KeyCheckMismatch> mismatches_;
};

// kmsd at start: compares each key this token has a KCV for with the recorded value;
// records it where none is (first come, first recorded: nodes starting together agree on
// one). Throws KeyMismatchError naming every differing key, both KCVs, the recorded
// origin and what to do; DatabaseError / DatabaseUnavailableError from the store.
std::vector<KeyCheckResult> check_key_checks(TokenContext& token, KeyCheckStore& store,
                                             const KeyCheckOrigin& origin);

// kms-provision after making keys: `replaced_labels` were created or replaced by the
// command: their values replace the recorded ones (a key without KCV drops its old
// value). The other keys were kept: recorded if none is, else compared (a difference
// throws KeyMismatchError, the database unchanged for every key).
std::vector<KeyCheckResult> record_key_checks(TokenContext& token, KeyCheckStore& store,
                                              const KeyCheckOrigin& origin,
                                              const std::vector<std::string>& replaced_labels);

// The operator's remedy when KCVs differ (part of KeyMismatchError's message).
std::string_view key_mismatch_advice();

}  // namespace tokens
