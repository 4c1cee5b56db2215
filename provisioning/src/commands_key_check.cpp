// key-check: this token's key check values against those recorded in the database (the
// start-time key check of kmsd, docs/OPERATIONS.md "The key check at start"), and the
// recording that init and clone do after making keys.
#include <unistd.h>

#include <memory>

#include "commands.h"
#include "exit_codes.h"
#include "tokens/key_check.h"
#include "tokens/key_check_store.h"
#include "tokens/unix_time.h"

namespace provisioning {
namespace {

namespace json = boost::json;

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "unknown host";
  return name;
}

json::object result_json(const tokens::KeyCheckResult& result) {
  json::object out{{"label", result.label},
                   {"outcome", std::string(tokens::outcome_name(result.outcome))},
                   {"kcv", result.kcv}};
  if (result.previous) {
    out["recorded"] =
        json::object{{"kcv", result.previous->kcv},
                     {"profile", result.previous->profile},
                     {"recorded_at", tokens::utc_timestamp(result.previous->recorded_at)},
                     {"recorded_by", result.previous->recorded_by},
                     {"command", result.previous->command},
                     {"token", result.previous->token}};
  }
  if (!result.detail.empty()) out["detail"] = result.detail;
  return out;
}

std::string result_line(const tokens::KeyCheckResult& result) {
  using tokens::KeyCheckOutcome;
  const std::string key = result.label + " " + result.kcv;
  switch (result.outcome) {
    case KeyCheckOutcome::recorded:
      return "key check recorded  " + key + "\n";
    case KeyCheckOutcome::matches:
    case KeyCheckOutcome::unchanged:
      return "key check matches   " + key + " (" + tokens::describe(*result.previous) + ")\n";
    case KeyCheckOutcome::replaced:
      return "key check replaced  " + key + " (was " + tokens::describe(*result.previous) + ")\n";
    case KeyCheckOutcome::removed:
      return "key check removed   " + result.label + " (was " + tokens::describe(*result.previous) +
             "): " + one_line(result.detail) + "\n";
    case KeyCheckOutcome::not_checked:
      break;
  }
  return "key check skipped   " + result.label + ": " + one_line(result.detail) + "\n";
}

int run_key_check(Context& context, bool record) {
  tokens::TokenContext& token = context.token();
  tokens::KeyCheckStore store(context.config().database);
  std::vector<tokens::KeyCheckResult> results;
  if (record) {
    // Every key counts as made here: this token's values replace the recorded ones.
    results = tokens::record_key_checks(
        token, store, {"kms-provision key-check --record", host_name()},
        {std::string(tokens::kMasterKeyLabel), std::string(tokens::kStorageKeyLabel),
         std::string(tokens::kTransportKeyLabel)});
  } else {
    // Compare without writing: a difference is this command's answer, not an error.
    json::array keys;
    std::string human;
    bool differ = false;
    for (const tokens::TokenKeyCheck& check : tokens::token_key_checks(token)) {
      const auto recorded = store.find(check.label);
      std::string state;
      if (!check.kcv) {
        state = check.problem.empty() ? "no kcv" : "unavailable";
      } else if (!recorded) {
        state = "not recorded";
      } else {
        state = recorded->kcv == *check.kcv ? "matches" : "DIFFERS";
        differ = differ || recorded->kcv != *check.kcv;
      }
      json::object item{{"label", check.label},
                        {"kcv", check.kcv.value_or("")},
                        {"state", state == "DIFFERS" ? "differs" : state}};
      if (recorded) item["recorded"] = tokens::describe(*recorded);
      if (!check.problem.empty()) item["problem"] = check.problem;
      keys.push_back(std::move(item));
      human += "key " + check.label + " " + (check.kcv ? *check.kcv : "------") + " " + state +
               (recorded ? ": recorded " + tokens::describe(*recorded) : std::string()) + "\n";
    }
    if (differ)
      human += "this token holds other KMS keys than the database records. " +
               std::string(tokens::key_mismatch_advice()) + "\n";
    context.print(
        json::object{{"token", token.token().label}, {"keys", std::move(keys)}, {"match", !differ}},
        human);
    return differ ? kKeyMismatch : kOk;
  }
  json::array keys;
  std::string human;
  for (const auto& result : results) {
    keys.push_back(result_json(result));
    human += result_line(result);
  }
  context.print(json::object{{"token", token.token().label}, {"keys", std::move(keys)}}, human);
  return kOk;
}

}  // namespace

KeyCheckReport record_made_keys(Context& context, const std::string& command,
                                const std::vector<std::string>& made) {
  KeyCheckReport report;
  try {
    tokens::KeyCheckStore store(context.config().database);
    for (const auto& result :
         tokens::record_key_checks(context.token(), store, {command, host_name()}, made)) {
      report.json.push_back(result_json(result));
      report.human += result_line(result);
    }
  } catch (const tokens::KeyMismatchError&) {
    throw;
  } catch (const tokens::DatabaseError& error) {
    // The keys are in the token already; only their record is missing.
    throw tokens::DatabaseError(std::string(error.what()) +
                                " (the KMS keys are in the token; record their check values "
                                "with `kms-provision key-check --record` once the database "
                                "can be written)");
  }
  return report;
}

void add_key_check_commands(CLI::App& app, Context& context, Action& action) {
  auto record = std::make_shared<bool>(false);
  auto* key_check = app.add_subcommand(
      "key-check",
      "Compare this token's key check values with those recorded in the database (what kmsd "
      "checks at start); exit 15 when they differ");
  key_check->add_flag("--record", *record,
                      "Record this token's values in place of the database's (when the "
                      "recorded ones are stale; every other node must then hold these keys)");
  on_run(key_check, action, [&context, record] { return run_key_check(context, *record); });
}

}  // namespace provisioning
