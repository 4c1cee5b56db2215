#include "cli_context.h"

#include <ctime>
#include <iostream>

#include "tokens/unix_time.h"

namespace provisioning {

namespace json = boost::json;

const tokens::TokenConfig& Context::config() {
  if (!config_) {
    tokens::TokenConfig config = tokens::load_token_config(
        options_.config_file ? std::optional<std::filesystem::path>(*options_.config_file)
                             : std::nullopt);
    if (options_.module) config.module = *options_.module;
    if (options_.init_reserved) config.init_reserved = *options_.init_reserved;
    if (options_.token_uri) config.uri = *options_.token_uri;
    if (options_.pin_file) {
      config.pin_file = *options_.pin_file;
      config.pin_env.reset();
    }
    if (options_.pin_env) {
      config.pin_env = *options_.pin_env;
      if (!options_.pin_file) config.pin_file.reset();
    }
    if (options_.database) config.database = *options_.database;
    if (options_.profile) config.profile = *options_.profile;
    if (options_.key_store) {
      auto mode = tokens::parse_key_store_mode(*options_.key_store);
      if (!mode) throw tokens::ConfigError("--key-store must be wrapped or token");
      config.key_store = *mode;
    }
    config.max_sessions = 2;            // one command at a time
    config.read_only_sessions = false;  // it creates and destroys token objects
    config.validate();
    config_ = std::move(config);
  }
  return *config_;
}

tokens::TokenContext& Context::token() {
  if (!token_) {
    token_ = tokens::TokenContext::open(config());
    for (const std::string& warning : token_->warnings()) {
      std::cerr << "kms-provision: warning: " << warning << "\n";
    }
  }
  return *token_;
}

tokens::KeyDatabase& Context::database() {
  if (!database_) {
    database_ = std::make_unique<tokens::KeyDatabase>(config().database);
    for (const std::string& warning : database_->warnings()) {
      std::cerr << "kms-provision: WARNING: " << warning << "\n";
    }
  }
  return *database_;
}

Provisioner Context::provisioner(bool with_database) {
  return Provisioner([this]() -> tokens::TokenContext& { return token(); },
                     with_database ? &database() : nullptr, config().key_store);
}

void Context::print(const json::value& value, const std::string& human) const {
  if (options_.json) {
    std::cout << json::serialize(value) << "\n";
  } else if (!human.empty()) {
    std::cout << human;
  }
}

std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

json::object record_json(const tokens::IdentityRecord& record) {
  return json::object{{"identity", record.identity},
                      {"kind", std::string(tokens::kind_name(record.kind))},
                      {"status", std::string(tokens::status_name(record.status))},
                      {"key_version", record.key_version},
                      {"store", std::string(tokens::key_store_mode_name(record.mode))},
                      {"created_at", tokens::utc_timestamp(record.created_at)},
                      {"updated_at", tokens::utc_timestamp(record.updated_at)}};
}

}  // namespace provisioning
