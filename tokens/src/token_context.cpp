#include "tokens/token_context.h"

#include "hsm/uri.h"

namespace tokens {

TokenContext::~TokenContext() = default;

std::unique_ptr<TokenContext> TokenContext::open(const TokenConfig& config, Instance instance) {
  config.validate();
  const hsm::PinSource pin_source = config.pin_source();
  hsm::TokenUri uri = [&] {
    try {
      return hsm::TokenUri::parse(config.uri);
    } catch (const hsm::Error& error) {
      throw ConfigError("token URI \"" + config.uri + "\": " + error.what());
    }
  }();
  std::string pin_warning;
  hsm::SecureString pin = pin_source.read(&pin_warning);  // before loading: fails fast

  std::unique_ptr<TokenContext> context(new TokenContext());
  if (!pin_warning.empty()) context->warnings_.push_back(std::move(pin_warning));
  context->config_ = config;
  // Held by the pool only: a recycle with a fresh instance must be able to finalise it.
  std::shared_ptr<hsm::Module> module = instance == Instance::separate
                                            ? hsm::Module::load_instance(config.module_config())
                                            : hsm::Module::load(config.module_config());
  context->token_ = uri.select(*module);
  const std::vector<CK_MECHANISM_TYPE> mechanisms = module->mechanisms(context->token_.slot);
  context->profile_ = select_profile(mechanisms, config.profile);
  context->profile_.quirks = config.quirks == "auto"
                                 ? detect_quirks(module->info(), context->token_.info)
                                 : quirks_by_name(config.quirks);
  hsm::PoolConfig pool_config = config.pool_config();
  pool_config.recycle_after_objects =
      recycle_threshold(context->profile_.quirks, config.recycle_after_objects);
  // A second instance of the library only for the token known to need and bear it
  // (SoftHSM): another vendor's library may hold connections or licences per instance.
  if (pool_config.recycle_after_objects > 0 && config.recycle == RecycleMode::fresh_instance &&
      context->profile_.quirks.leaks_destroyed_session_objects) {
    pool_config.fresh_instance = [module_config = config.module_config()] {
      return hsm::Module::load_instance(module_config);
    };
  }
  context->pool_ = std::make_unique<hsm::SessionPool>(std::move(module), context->token_.slot,
                                                      std::move(pin), pool_config);
  for (const std::string& warning : context->pool_->warnings()) {
    context->warnings_.push_back(warning);
  }
  return context;
}

std::vector<std::string> TokenContext::missing_kms_keys() {
  return pool_->run([](hsm::Session& session) {
    std::vector<std::string> missing;
    for (const hsm::KeyRef& ref : {master_key(), storage_key(), transport_key()}) {
      hsm::AttributeTemplate match;
      match.set_ulong(CKA_CLASS, ref.object_class).set_string(CKA_LABEL, ref.label);
      if (session.find(std::move(match), 2).empty()) missing.push_back(ref.label);
    }
    return missing;
  });
}

void TokenContext::require_kms_keys() {
  const std::vector<std::string> missing = missing_kms_keys();
  if (missing.empty()) return;
  std::string names;
  for (const auto& label : missing) names += (names.empty() ? "" : ", ") + label;
  throw NotInitialisedError(
      "token \"" + token_.label + "\" lacks the KMS keys " + names + " (run kms-provision init)",
      missing);
}

}  // namespace tokens
