#include "tokens/token_config.h"

#include <toml++/toml.h>

#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>

#include "storage/database_url.h"
#include "tokens/profile.h"
#include "tokens/token_config_toml.h"

namespace tokens {
namespace {

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::size_t parse_size(const std::string& text, const std::string& where) {
  try {
    std::size_t used = 0;
    const unsigned long long value = std::stoull(text, &used);
    if (used != text.size() || text.front() == '-') throw std::invalid_argument(text);
    return static_cast<std::size_t>(value);
  } catch (const std::exception&) {
    throw ConfigError(where + ": \"" + text + "\" is not a non-negative integer");
  }
}

std::string source_key(std::string_view source, std::string_view table, std::string_view key) {
  return std::string(source) + ": [" + std::string(table) + "] " + std::string(key);
}

std::string require_string(const toml::node& node, const std::string& where) {
  if (const auto* value = node.as_string()) return value->get();
  throw ConfigError(where + " must be a string");
}

std::size_t require_size(const toml::node& node, const std::string& where) {
  if (const auto* value = node.as_integer()) {
    if (value->get() < 0) throw ConfigError(where + " must not be negative");
    return static_cast<std::size_t>(value->get());
  }
  throw ConfigError(where + " must be an integer");
}

// The KMS_* variables over what `config` holds; their paths are used as given.
void apply_environment(TokenConfig& config) {
  if (auto v = env("KMS_PKCS11_MODULE")) config.module = *v;
  if (auto v = env("KMS_PKCS11_INIT_RESERVED")) config.init_reserved = *v;
  if (auto v = env("KMS_TOKEN_URI")) config.uri = *v;
  if (auto v = env("KMS_PIN_FILE")) config.pin_file = *v;
  if (auto v = env("KMS_PIN_ENV")) config.pin_env = *v;
  if (auto v = env("KMS_TOKEN_PROFILE")) config.profile = *v;
  if (auto v = env("KMS_TOKEN_QUIRKS")) config.quirks = *v;
  if (auto v = env("KMS_DATABASE")) config.database = *v;
  if (auto v = env("KMS_KEY_STORE")) {
    auto mode = parse_key_store_mode(*v);
    if (!mode) throw ConfigError("KMS_KEY_STORE: \"" + *v + "\" is not wrapped or token");
    config.key_store = *mode;
  }
  if (auto v = env("KMS_KEY_CACHE_SIZE"))
    config.key_cache_size = parse_size(*v, "KMS_KEY_CACHE_SIZE");
  if (auto v = env("KMS_MEDIA_KEY_CACHE_SIZE"))
    config.media_key_cache_size = parse_size(*v, "KMS_MEDIA_KEY_CACHE_SIZE");
  if (auto v = env("KMS_MAX_SESSIONS")) config.max_sessions = parse_size(*v, "KMS_MAX_SESSIONS");
  if (auto v = env("KMS_RECYCLE_AFTER_OBJECTS")) {
    config.recycle_after_objects = parse_size(*v, "KMS_RECYCLE_AFTER_OBJECTS");
  }
  if (auto v = env("KMS_RECYCLE")) {
    auto mode = parse_recycle_mode(*v);
    if (!mode) throw ConfigError("KMS_RECYCLE: \"" + *v + "\" is not fresh_instance or in_place");
    config.recycle = *mode;
  }
  if (auto v = env("KMS_READ_ONLY_SESSIONS")) {
    if (*v != "true" && *v != "false") {
      throw ConfigError("KMS_READ_ONLY_SESSIONS: \"" + *v + "\" is not true or false");
    }
    config.read_only_sessions = *v == "true";
  }
}

// The one rule for relative paths: a relative path written in the configuration file is
// relative to the file's folder (base); with no folder (text) it stays as written.
std::string anchored(const std::optional<std::filesystem::path>& base, const std::string& value) {
  if (!base || value.empty() || std::filesystem::path(value).is_absolute()) return value;
  return (*base / value).string();
}

// A module value names a file when it holds a '/'; otherwise it is a p11-kit module name.
bool names_a_file(const std::string& module) { return module.find('/') != std::string::npos; }

void apply_token_table(TokenConfig& config, const toml::table& token, std::string_view source_name,
                       const std::optional<std::filesystem::path>& base) {
  for (const auto& [key, node] : token) {
    const std::string where = source_key(source_name, "token", key.str());
    if (key == "module") {
      config.module = require_string(node, where);
      if (names_a_file(config.module)) config.module = anchored(base, config.module);
    } else if (key == "init_reserved") {
      config.init_reserved = require_string(node, where);
    } else if (key == "uri") {
      config.uri = require_string(node, where);
    } else if (key == "pin_file") {
      config.pin_file = anchored(base, require_string(node, where));
      config.pin_env.reset();  // the file names one source, not two
    } else if (key == "pin_env") {
      config.pin_env = require_string(node, where);
      if (!token.contains("pin_file")) config.pin_file.reset();
    } else if (key == "profile") {
      config.profile = require_string(node, where);
    } else if (key == "quirks") {
      config.quirks = require_string(node, where);
    } else if (key == "key_store") {
      const std::string value = require_string(node, where);
      auto mode = parse_key_store_mode(value);
      if (!mode) throw ConfigError(where + ": \"" + value + "\" is not wrapped or token");
      config.key_store = *mode;
    } else if (key == "key_cache_size") {
      config.key_cache_size = require_size(node, where);
    } else if (key == "media_key_cache_size") {
      config.media_key_cache_size = require_size(node, where);
    } else if (key == "max_sessions") {
      config.max_sessions = require_size(node, where);
    } else if (key == "recycle_after_objects") {
      config.recycle_after_objects = require_size(node, where);
    } else if (key == "recycle") {
      const std::string value = require_string(node, where);
      auto mode = parse_recycle_mode(value);
      if (!mode) throw ConfigError(where + ": \"" + value + "\" is not fresh_instance or in_place");
      config.recycle = *mode;
    } else if (key == "read_only_sessions") {
      const auto* value = node.as_boolean();
      if (value == nullptr) throw ConfigError(where + " must be true or false");
      config.read_only_sessions = value->get();
    } else {
      throw ConfigError(where + ": unknown key");
    }
  }
}

// Everything the token layer reads from [database] (kept in one place: the table's keys
// belong to the storage layer).
void apply_database_table(TokenConfig& config, const toml::table& database,
                          std::string_view source_name,
                          const std::optional<std::filesystem::path>& base) {
  // [database] may hold keys of other layers; url and path (the older spelling of an SQLite
  // url) are ours: storage/database_url.h. A relative SQLite path is relative to the file's
  // folder like every other path; a PostgreSQL URL is left as it is.
  const toml::node* url = database.get("url");
  const toml::node* path = database.get("path");
  if (url && path) {
    throw ConfigError(std::string(source_name) + ": [database] has both url and path; keep url");
  }
  std::string value;
  if (url) value = require_string(*url, source_key(source_name, "database", "url"));
  if (path) value = require_string(*path, source_key(source_name, "database", "path"));
  if (url || path) config.database = base ? storage::anchor_database(value, base->string()) : value;
}

void apply_tables(TokenConfig& config, const toml::table& root, std::string_view source_name,
                  const std::optional<std::filesystem::path>& base) {
  if (const toml::node* token_node = root.get("token")) {
    const toml::table* token = token_node->as_table();
    if (token == nullptr) throw ConfigError(std::string(source_name) + ": [token] must be a table");
    apply_token_table(config, *token, source_name, base);
  }
  if (const toml::node* database_node = root.get("database")) {
    const toml::table* database = database_node->as_table();
    if (database == nullptr) {
      throw ConfigError(std::string(source_name) + ": [database] must be a table");
    }
    apply_database_table(config, *database, source_name, base);
  }
}

std::filesystem::path folder_of(const std::filesystem::path& file) {
  return std::filesystem::absolute(file).parent_path();
}

toml::table parse_file(const std::filesystem::path& file) {
  try {
    return toml::parse_file(file.string());
  } catch (const toml::parse_error& error) {
    std::ostringstream message;
    message << file.string() << ":" << error.source().begin.line << ": " << error.description();
    throw ConfigError(message.str());
  }
}

}  // namespace

std::string_view key_store_mode_name(KeyStoreMode mode) {
  return mode == KeyStoreMode::token ? "token" : "wrapped";
}

std::optional<KeyStoreMode> parse_key_store_mode(std::string_view name) {
  if (name == "wrapped") return KeyStoreMode::wrapped;
  if (name == "token") return KeyStoreMode::token;
  return std::nullopt;
}

std::string_view recycle_mode_name(RecycleMode mode) {
  return mode == RecycleMode::in_place ? "in_place" : "fresh_instance";
}

std::optional<RecycleMode> parse_recycle_mode(std::string_view name) {
  if (name == "fresh_instance") return RecycleMode::fresh_instance;
  if (name == "in_place") return RecycleMode::in_place;
  return std::nullopt;
}

std::string TokenConfig::resolved_module() const {
  std::optional<std::string> from_uri;
  try {
    const hsm::TokenUri parsed = hsm::TokenUri::parse(uri);
    from_uri = parsed.module_path() ? parsed.module_path() : parsed.module_name();
  } catch (const hsm::Error&) {
    // A bad URI is reported where it is parsed for the token (validate, TokenContext::open).
  }
  if (!module.empty()) {
    if (from_uri && *from_uri != module) {
      throw ConfigError("[token] module \"" + module + "\" and the token URI's module \"" +
                        *from_uri + "\" differ: name the module once");
    }
    return module;
  }
  return from_uri ? *from_uri : std::string(kDefaultModule);
}

hsm::ModuleConfig TokenConfig::module_config() const {
  return hsm::ModuleConfig{resolved_module(), init_reserved};
}

hsm::PinSource TokenConfig::pin_source() const {
  hsm::PinSource source;
  if (pin_file) {
    source.file = pin_file;
    return source;
  }
  if (pin_env) {
    source.environment_variable = pin_env;
    return source;
  }
  std::optional<hsm::TokenUri> parsed;
  try {
    parsed = hsm::TokenUri::parse(uri);
  } catch (const std::exception& error) {
    throw ConfigError("token URI \"" + uri + "\": " + error.what());
  }
  if (parsed->pin_value()) {
    throw ConfigError(
        "token URI carries pin-value: PINs come from pin-source, a PIN file or "
        "an environment variable, never from the configuration");
  }
  if (auto from_uri = parsed->pin_source()) {
    std::string path = *from_uri;
    if (path.starts_with("file:")) path = path.substr(5);
    while (path.starts_with("//")) path = path.substr(1);  // file:///x -> /x
    source.file = path;
    return source;
  }
  throw ConfigError(
      "no PIN source: set --pin-file, --pin-env, [token] pin_file/pin_env, "
      "KMS_PIN_FILE/KMS_PIN_ENV, or pin-source in the token URI");
}

hsm::PoolConfig TokenConfig::pool_config() const {
  hsm::PoolConfig pool;
  pool.max_sessions = max_sessions;
  pool.read_only = read_only_sessions.value_or(false);
  // A session back in the pool for less than a second answered its last call: no
  // C_GetSessionInfo per request on a busy server (an operation that meets a dropped
  // session is repaired and run again).
  pool.validate_after_idle = std::chrono::milliseconds(1000);
  pool.recycle_after_objects = recycle_after_objects.value_or(0);
  return pool;
}

void TokenConfig::validate() const {
  (void)resolved_module();  // [token] module and the URI's module-path= must agree
  if (!uri.starts_with("pkcs11:")) {
    throw ConfigError("token URI \"" + uri + "\" is not a pkcs11: URI");
  }
  if (profile != kAutoProfile && find_profile_definition(profile) == nullptr) {
    throw ConfigError("token profile \"" + profile + "\" is not " +
                      requestable_profile_names(" or "));
  }
  if (quirks != "auto" && quirks != "softhsm2" && quirks != "nss" && quirks != "standard") {
    throw ConfigError("token quirks \"" + quirks + "\" is not auto, softhsm2, nss or standard");
  }
  if (database.empty()) throw ConfigError("no database path configured ([database] path)");
  if (key_cache_size == 0) throw ConfigError("key_cache_size must be at least 1");
  if (max_sessions == 0) throw ConfigError("max_sessions must be at least 1");
}

TokenConfig token_config_from_environment() {
  TokenConfig config;
  apply_environment(config);
  return config;
}

void apply_config_text(TokenConfig& config, std::string_view toml_text,
                       std::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& error) {
    std::ostringstream message;
    message << source_name << ":" << error.source().begin.line << ": " << error.description();
    throw ConfigError(message.str());
  }
  apply_tables(config, root, source_name, std::nullopt);  // no file, no folder
}

void apply_config_file(TokenConfig& config, const std::filesystem::path& file) {
  apply_tables(config, parse_file(file), file.string(), folder_of(file));
}

TokenConfig load_token_config(const toml::table& root, const std::filesystem::path& file) {
  TokenConfig config;
  // The built-in database sits next to the file, like a relative path written in it.
  config.database = anchored(folder_of(file), config.database);
  apply_environment(config);
  apply_tables(config, root, file.string(), folder_of(file));
  return config;
}

TokenConfig load_token_config(const std::optional<std::filesystem::path>& file) {
  if (!file) return token_config_from_environment();
  return load_token_config(parse_file(*file), *file);
}

}  // namespace tokens
