// One call that opens the configured token for the KMS: loads the module, selects the
// token by URI, opens the session pool (logs in: a wrong PIN fails here), and selects the
// token profile from the mechanism list. Used by kmsd and kms-provision alike.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "hsm/module.h"
#include "hsm/session_pool.h"
#include "tokens/key_templates.h"
#include "tokens/profile.h"
#include "tokens/token_config.h"

namespace tokens {

// The token lacks some of the KMS's own keys (`kms-provision init` not run).
class NotInitialisedError : public std::runtime_error {
 public:
  NotInitialisedError(std::string message, std::vector<std::string> missing)
      : std::runtime_error(std::move(message)), missing_(std::move(missing)) {}
  const std::vector<std::string>& missing() const noexcept { return missing_; }

 private:
  std::vector<std::string> missing_;
};

class TokenContext {
 public:
  // shared: the library as every other user in the process loads it (one initialisation).
  // separate: a private instance of the library (hsm::Module::load_instance), with its own
  // sessions and login, for parallel bulk work on a token with the quirk
  // serialises_token_object_use; throws hsm::Error (ErrorKind::module_load) where the copy
  // cannot be loaded.
  enum class Instance { shared, separate };
  // Throws ConfigError (configuration, PIN source), hsm::Error (module, token not found:
  // ErrorKind::not_found listing the tokens that exist; wrong PIN: CKR_PIN_INCORRECT),
  // MissingMechanismError (profile selection).
  static std::unique_ptr<TokenContext> open(const TokenConfig& config,
                                            Instance instance = Instance::shared);
  ~TokenContext();
  TokenContext(const TokenContext&) = delete;
  TokenContext& operator=(const TokenContext&) = delete;

  hsm::SessionPool& pool() noexcept { return *pool_; }
  const TokenProfile& profile() const noexcept { return profile_; }
  const hsm::TokenDescription& token() const noexcept { return token_; }
  const TokenConfig& config() const noexcept { return config_; }
  // The instance the pool uses now (a recycle with a fresh instance replaces it).
  std::shared_ptr<hsm::Module> module() const noexcept { return pool_->module(); }
  // What opening changed or accepted against the configuration, one sentence each, for the
  // program's log or stderr: a PIN file accepted with KMS_ALLOW_INSECURE_PIN_FILE=1,
  // max_sessions lowered to the token's session limit.
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

  // The KMS's own token keys (labels in key_templates.h).
  static hsm::KeyRef master_key() { return master_key_ref(); }
  static hsm::KeyRef storage_key() { return storage_key_ref(); }
  static hsm::KeyRef transport_key() { return transport_key_ref(); }

  // Labels of the KMS keys that are not in the token (empty: initialised).
  std::vector<std::string> missing_kms_keys();
  // Throws NotInitialisedError naming the missing keys (kmsd calls this at start).
  void require_kms_keys();

 private:
  TokenContext() = default;
  TokenConfig config_;
  hsm::TokenDescription token_{};
  TokenProfile profile_;
  std::unique_ptr<hsm::SessionPool> pool_;
  std::vector<std::string> warnings_;
};

}  // namespace tokens
