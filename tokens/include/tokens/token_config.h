// Which token the KMS uses and how: the [token] and [database] tables of the TOML
// configuration shared by kmsd and kms-provision, with environment-variable defaults.
//
// Precedence (lowest first): built-in defaults < environment (KMS_*) < config file <
// command-line overrides (applied by the caller on the returned struct).
//
//   [token]                                   environment default
//   module = "/usr/lib/softhsm/libsofthsm2.so" KMS_PKCS11_MODULE  (path or p11-kit name; absent:
//                                             the URI's module-path=/module-name=, else SoftHSM)
//   init_reserved = "configdir='sql:/d' ..."  KMS_PKCS11_INIT_RESERVED (NSS softoken)
//   uri = "pkcs11:token=kms"                  KMS_TOKEN_URI
//   pin_file = "/etc/kms/user.pin"            KMS_PIN_FILE
//   pin_env = "KMS_USER_PIN"                  KMS_PIN_ENV (the NAME of the variable)
//   profile = "auto"                          KMS_TOKEN_PROFILE
//   quirks = "auto"                           KMS_TOKEN_QUIRKS   ("auto" | "softhsm2" | "nss" |
//                                                                  "standard")
//   key_store = "wrapped"                     KMS_KEY_STORE      ("wrapped" | "token")
//   key_cache_size = 4096                     KMS_KEY_CACHE_SIZE
//   media_key_cache_size = 1024               KMS_MEDIA_KEY_CACHE_SIZE (0: off)
//   max_sessions = 8                          KMS_MAX_SESSIONS
//   recycle_after_objects = 200000            KMS_RECYCLE_AFTER_OBJECTS (0: never; unset: the
//                                             token quirks' default, tokens/token_quirks.h)
//   recycle = "fresh_instance"                KMS_RECYCLE ("fresh_instance" | "in_place"; a
//                                             fresh instance only on a token with the
//                                             leaks_destroyed_session_objects quirk)
//   read_only_sessions = true|false           KMS_READ_ONLY_SESSIONS ("true" | "false");
//                                             unset: the program's default (kmsd: true;
//                                             kms-provision always read/write)
//   [database]
//   url = "sqlite:kms.db"                     KMS_DATABASE       (or "postgresql://...":
//                                             storage/database_url.h; path = "kms.db", the
//                                             older key, is accepted as an SQLite url)
//
// The PIN: pin_file, else pin_env, else the URI's pin-source. A pin-value in the URI is
// refused (a PIN never sits in a config file or on a command line).
//
// Relative paths (one rule for kmsd, kms-provision and kms-audit, all of which load through
// load_token_config): pin_file, [database] path and a module that names a file (a value
// with a '/'; without one it is a p11-kit module name) are relative to the folder of the
// configuration file when the file says them, and so is the built-in database "kms.db"
// when a file is loaded. Values from KMS_* variables and command-line options are used as
// given (relative to the working directory). Without a file nothing is rewritten.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "hsm/module.h"
#include "hsm/session_pool.h"
#include "hsm/uri.h"

namespace tokens {

enum class KeyStoreMode { wrapped, token };
std::string_view key_store_mode_name(KeyStoreMode mode);  // "wrapped" / "token"
std::optional<KeyStoreMode> parse_key_store_mode(std::string_view name);

// How the module is recycled (hsm/session_pool.h "Recycling"): a fresh instance of the
// library serves while the old one is finalised (requests wait only for the drain), or in
// place (requests also wait for C_Finalize, C_Initialize and the login).
enum class RecycleMode { fresh_instance, in_place };
std::string_view recycle_mode_name(RecycleMode mode);  // "fresh_instance" / "in_place"
std::optional<RecycleMode> parse_recycle_mode(std::string_view name);

// A configuration value is missing or wrong; what() names the key and its source.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Used when neither [token] module nor the URI's module-path=/module-name= names one.
inline constexpr const char* kDefaultModule = "/usr/lib/softhsm/libsofthsm2.so";

struct TokenConfig {
  // Empty: the URI's module-path= or module-name= (as p11tool, GnuTLS and pkcs11-provider
  // read it), else kDefaultModule. Both given and different is a ConfigError.
  std::string module;
  std::optional<std::string> init_reserved;
  std::string uri = "pkcs11:token=kms";
  std::optional<std::string> pin_file;
  std::optional<std::string> pin_env;
  std::string profile = "auto";
  std::string quirks = "auto";      // tokens/token_quirks.h; auto = detect from C_GetInfo
  std::string database = "kms.db";  // a database URL or an SQLite path
  KeyStoreMode key_store = KeyStoreMode::wrapped;
  // About 17 KiB per entry on SoftHSM, 10 KiB on NSS (docs/ARCHITECTURE.md "Key store").
  std::size_t key_cache_size = 4096;
  // Media keys derived from M kept for their next use (the chair's K1 for the next
  // invitation, every K for the bridge's release): tokens/derived_key_cache.h. 0: off.
  std::size_t media_key_cache_size = 1024;
  std::size_t max_sessions = 8;
  // hsm::PoolConfig::recycle_after_objects; unset: recycle_threshold() of the token's quirks
  // (TokenContext::open decides, once the quirks are known).
  std::optional<std::uint64_t> recycle_after_objects;
  RecycleMode recycle = RecycleMode::fresh_instance;
  // hsm::PoolConfig::read_only; unset: the program decides (pool_config() says false).
  std::optional<bool> read_only_sessions;

  hsm::ModuleConfig module_config() const;
  // The module that module_config() loads: a path or a p11-kit module name.
  std::string resolved_module() const;
  // Where the PIN comes from (see above). Throws ConfigError if nothing names a source
  // or the URI carries pin-value.
  hsm::PinSource pin_source() const;
  hsm::PoolConfig pool_config() const;
  // Checks value ranges and names; throws ConfigError.
  void validate() const;
};

// The one loader: built-in defaults, then the KMS_* environment variables, then the
// [token] and [database] tables of `file` when given (unknown keys in [token] are errors;
// other tables are ignored), with the relative-path rule above. The caller applies its
// command-line options on the result. Throws ConfigError. (Parsed already:
// token_config_toml.h.)
TokenConfig load_token_config(const std::optional<std::filesystem::path>& file);

// The pieces, for tests: defaults + environment; a file's or a text's tables over `config`
// (a text has no folder: its relative paths stay as written).
TokenConfig token_config_from_environment();
void apply_config_file(TokenConfig& config, const std::filesystem::path& file);
void apply_config_text(TokenConfig& config, std::string_view toml_text,
                       std::string_view source_name = "config");

}  // namespace tokens
