#include "tokens/token_config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "support/test_token.h"
#include "tokens/token_quirks.h"

namespace {

// gtest_discover_tests runs each test in its own process: clearing is enough.
void clear_environment() {
  for (const char* name :
       {"KMS_PKCS11_MODULE", "KMS_PKCS11_INIT_RESERVED", "KMS_TOKEN_URI", "KMS_PIN_FILE",
        "KMS_PIN_ENV", "KMS_TOKEN_PROFILE", "KMS_DATABASE", "KMS_KEY_STORE", "KMS_KEY_CACHE_SIZE",
        "KMS_MEDIA_KEY_CACHE_SIZE", "KMS_MAX_SESSIONS", "KMS_TOKEN_QUIRKS",
        "KMS_READ_ONLY_SESSIONS", "KMS_RECYCLE_AFTER_OBJECTS", "KMS_RECYCLE"}) {
    unsetenv(name);
  }
}

TEST(TokenConfig, DefaultsThenEnvironmentThenFile) {
  clear_environment();
  tokens::TokenConfig defaults = tokens::token_config_from_environment();
  EXPECT_EQ(defaults.profile, "auto");
  EXPECT_EQ(defaults.key_store, tokens::KeyStoreMode::wrapped);

  setenv("KMS_TOKEN_URI", "pkcs11:token=from-env", 1);
  setenv("KMS_PIN_ENV", "MY_PIN", 1);
  setenv("KMS_KEY_CACHE_SIZE", "77", 1);
  setenv("KMS_MEDIA_KEY_CACHE_SIZE", "55", 1);
  tokens::TokenConfig config = tokens::token_config_from_environment();
  EXPECT_EQ(config.uri, "pkcs11:token=from-env");
  EXPECT_EQ(config.pin_env, "MY_PIN");
  EXPECT_EQ(config.key_cache_size, 77u);
  EXPECT_EQ(config.media_key_cache_size, 55u);

  tokens::apply_config_text(config, R"(
[token]
module = "/opt/hsm/lib.so"
init_reserved = "configdir='sql:/x'"
pin_file = "/etc/kms/pin"
profile = "sp800-108-cmac"
key_store = "token"
max_sessions = 3
media_key_cache_size = 9

[database]
path = "/var/lib/kms/kms.db"
registry_retention = "7d"   # another layer's key: ignored here

[server]
listen = "0.0.0.0:8443"
)");
  EXPECT_EQ(config.module, "/opt/hsm/lib.so");
  EXPECT_EQ(config.init_reserved, "configdir='sql:/x'");
  EXPECT_EQ(config.uri, "pkcs11:token=from-env");  // not in the file: environment stays
  EXPECT_EQ(config.pin_file, "/etc/kms/pin");
  EXPECT_FALSE(config.pin_env.has_value());  // the file chose a PIN file
  EXPECT_EQ(config.profile, "sp800-108-cmac");
  EXPECT_EQ(config.key_store, tokens::KeyStoreMode::token);
  EXPECT_EQ(config.max_sessions, 3u);
  EXPECT_EQ(config.media_key_cache_size, 9u);
  EXPECT_EQ(config.database, "/var/lib/kms/kms.db");
  EXPECT_EQ(config.pin_source().file, "/etc/kms/pin");
  clear_environment();
}

// The pkcs11: URI as the one knob: module-path= / module-name= name the module when
// [token] module does not; both given and different is an error, never a silent choice.
TEST(TokenConfig, TheUriCanNameTheModule) {
  tokens::TokenConfig config;
  EXPECT_EQ(config.resolved_module(), tokens::kDefaultModule);
  config.uri = "pkcs11:token=kms?module-path=/opt/hsm/libvendor.so";
  EXPECT_EQ(config.resolved_module(), "/opt/hsm/libvendor.so");
  EXPECT_EQ(config.module_config().module, "/opt/hsm/libvendor.so");
  config.uri = "pkcs11:token=kms?module-name=softhsm2";
  EXPECT_EQ(config.resolved_module(), "softhsm2");
  config.module = "softhsm2";  // the same module named twice: fine
  EXPECT_EQ(config.resolved_module(), "softhsm2");
  config.module = "/usr/lib/other.so";
  EXPECT_THROW(config.resolved_module(), tokens::ConfigError);
  config.pin_env = "X";
  EXPECT_THROW(config.validate(), tokens::ConfigError);
}

TEST(TokenConfig, ErrorsNameTheKey) {
  clear_environment();
  tokens::TokenConfig config;
  auto message = [&](const std::string& text) {
    try {
      tokens::apply_config_text(config, text, "kms.toml");
    } catch (const tokens::ConfigError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("[token]\nmodul = 'x'\n").find("modul"), std::string::npos);
  EXPECT_NE(message("[token]\nkey_store = 'disk'\n").find("key_store"), std::string::npos);
  EXPECT_NE(message("[token]\nmax_sessions = 'many'\n").find("max_sessions"), std::string::npos);
  EXPECT_NE(message("[token\n").find("kms.toml"), std::string::npos);
  EXPECT_THROW(tokens::apply_config_file(config, "/nonexistent/kms.toml"), tokens::ConfigError);

  config = tokens::TokenConfig{};
  config.profile = "fast";
  EXPECT_THROW(config.validate(), tokens::ConfigError);
  config = tokens::TokenConfig{};
  config.uri = "token=kms";
  EXPECT_THROW(config.validate(), tokens::ConfigError);
  config = tokens::TokenConfig{};
  config.media_key_cache_size = 0;  // the media-key cache off
  EXPECT_NO_THROW(config.validate());
}

// read_only_sessions: unset means the program decides (kmsd read-only, kms-provision
// read/write); the pool gets what is set. Quirks names include nss.
TEST(TokenConfig, ReadOnlySessionsAndQuirks) {
  clear_environment();
  tokens::TokenConfig config = tokens::token_config_from_environment();
  EXPECT_FALSE(config.read_only_sessions.has_value());
  EXPECT_FALSE(config.pool_config().read_only);
  setenv("KMS_READ_ONLY_SESSIONS", "true", 1);
  config = tokens::token_config_from_environment();
  EXPECT_EQ(config.read_only_sessions, true);
  EXPECT_TRUE(config.pool_config().read_only);
  tokens::apply_config_text(config, "[token]\nread_only_sessions = false\nquirks = 'nss'\n");
  EXPECT_EQ(config.read_only_sessions, false);
  EXPECT_FALSE(config.pool_config().read_only);
  EXPECT_EQ(config.quirks, "nss");
  EXPECT_NO_THROW(config.validate());
  setenv("KMS_READ_ONLY_SESSIONS", "yes", 1);
  EXPECT_THROW(tokens::token_config_from_environment(), tokens::ConfigError);
  EXPECT_THROW(tokens::apply_config_text(config, "[token]\nread_only_sessions = 'yes'\n"),
               tokens::ConfigError);
  config.quirks = "mozilla";
  EXPECT_THROW(config.validate(), tokens::ConfigError);
  clear_environment();
}

// Unset: the token quirks decide (TokenContext::open); 0 and any number are the operator's.
TEST(TokenConfig, RecycleAfterObjects) {
  clear_environment();
  tokens::TokenConfig config = tokens::token_config_from_environment();
  EXPECT_FALSE(config.recycle_after_objects.has_value());
  const tokens::TokenQuirks softhsm = tokens::quirks_by_name("softhsm2");
  const tokens::TokenQuirks nss = tokens::quirks_by_name("nss");
  EXPECT_TRUE(softhsm.leaks_destroyed_session_objects);
  EXPECT_FALSE(nss.leaks_destroyed_session_objects);
  EXPECT_EQ(tokens::recycle_threshold(softhsm, std::nullopt), tokens::kDefaultRecycleAfterObjects);
  EXPECT_EQ(tokens::recycle_threshold(nss, std::nullopt), 0u);
  EXPECT_EQ(tokens::recycle_threshold(softhsm, 0), 0u);
  EXPECT_EQ(tokens::recycle_threshold(nss, 500), 500u);
  setenv("KMS_RECYCLE_AFTER_OBJECTS", "1000", 1);
  config = tokens::token_config_from_environment();
  EXPECT_EQ(config.recycle_after_objects, 1000u);
  EXPECT_EQ(config.pool_config().recycle_after_objects, 1000u);
  tokens::apply_config_text(config, "[token]\nrecycle_after_objects = 0\n");
  EXPECT_EQ(config.recycle_after_objects, 0u);
  EXPECT_THROW(tokens::apply_config_text(config, "[token]\nrecycle_after_objects = -1\n"),
               tokens::ConfigError);
  setenv("KMS_RECYCLE_AFTER_OBJECTS", "many", 1);
  EXPECT_THROW(tokens::token_config_from_environment(), tokens::ConfigError);
  clear_environment();
}

// [token] recycle / KMS_RECYCLE: how a leaking token's module is recycled.
TEST(TokenConfig, RecycleMode) {
  clear_environment();
  tokens::TokenConfig config = tokens::token_config_from_environment();
  EXPECT_EQ(config.recycle, tokens::RecycleMode::fresh_instance);
  setenv("KMS_RECYCLE", "in_place", 1);
  config = tokens::token_config_from_environment();
  EXPECT_EQ(config.recycle, tokens::RecycleMode::in_place);
  tokens::apply_config_text(config, "[token]\nrecycle = \"fresh_instance\"\n");
  EXPECT_EQ(config.recycle, tokens::RecycleMode::fresh_instance);
  try {
    tokens::apply_config_text(config, "[token]\nrecycle = \"sometimes\"\n");
    FAIL() << "an unknown recycle mode was accepted";
  } catch (const tokens::ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("recycle"), std::string::npos) << error.what();
  }
  setenv("KMS_RECYCLE", "never", 1);
  EXPECT_THROW(tokens::token_config_from_environment(), tokens::ConfigError);
  EXPECT_EQ(tokens::recycle_mode_name(tokens::RecycleMode::in_place), "in_place");
  EXPECT_EQ(tokens::parse_recycle_mode("fresh_instance"), tokens::RecycleMode::fresh_instance);
  clear_environment();
}

TEST(TokenConfig, PinSourcePrecedenceAndUriPinSource) {
  clear_environment();
  tokens::TokenConfig config;
  config.uri = "pkcs11:token=kms?pin-source=file:/run/kms/pin";
  EXPECT_EQ(config.pin_source().file, "/run/kms/pin");
  config.pin_env = "KMS_USER_PIN";
  EXPECT_EQ(config.pin_source().environment_variable, "KMS_USER_PIN");
  config.pin_file = "/etc/pin";
  EXPECT_EQ(config.pin_source().file, "/etc/pin");

  tokens::TokenConfig with_value;
  with_value.uri = "pkcs11:token=kms?pin-value=1234";
  EXPECT_THROW(with_value.pin_source(), tokens::ConfigError);
  tokens::TokenConfig without;
  EXPECT_THROW(without.pin_source(), tokens::ConfigError);
}

TEST(TokenConfig, LoadsAFile) {
  clear_environment();
  testsupport::TempDir dir("kms-config-test");
  const std::string path = dir.path() + "/kms.toml";
  std::ofstream(path) << "[token]\nuri = \"pkcs11:token=file\"\npin_file = \"pins/user.pin\"\n"
                         "module = \"libsofthsm2.so\"\n[database]\npath = \"x.db\"\n";
  const tokens::TokenConfig config = tokens::load_token_config(path);
  EXPECT_EQ(config.uri, "pkcs11:token=file");
  // Relative to the file's folder; a module name without '/' stays a p11-kit name.
  EXPECT_EQ(config.database, dir.path() + "/x.db");
  EXPECT_EQ(config.pin_file, dir.path() + "/pins/user.pin");
  EXPECT_EQ(config.module, "libsofthsm2.so");
}

}  // namespace
