// Module loading (by path, by p11-kit module name), shared initialisation, re-initialisation,
// pkcs11: URI selection, PIN sources, login errors, call instrumentation.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>

#include "hsm/instrumentation.h"
#include "token_fixture.h"

// Exported by libp11-kit for its test suite (not in its public headers).
extern "C" void p11_kit_override_system_files(const char* system_conf, const char* user_conf,
                                              const char* package_modules,
                                              const char* system_modules, const char* user_modules);

namespace hsmtest {
namespace {

// p11-kit 0.24's compiled-in defaults.
void restore_p11kit_files() {
  p11_kit_override_system_files("/etc/pkcs11/pkcs11.conf", "~/.config/pkcs11/pkcs11.conf",
                                "/usr/share/p11-kit/modules", "/etc/pkcs11/modules",
                                "~/.config/pkcs11/modules");
}

using ModuleTest = TokenTest;
using testsupport::token_kind_name;

TEST_P(ModuleTest, LoadsByPathAndListsTheTestToken) {
  const auto tokens = module_->tokens();
  ASSERT_FALSE(tokens.empty());
  bool found = false;
  for (const auto& t : tokens) found = found || t.label == token_->token_label();
  EXPECT_TRUE(found);
  EXPECT_NE(module_->description().find(token_->module_path()), std::string::npos);
  const auto mechanisms = module_->mechanisms(slot_);
  EXPECT_NE(std::find(mechanisms.begin(), mechanisms.end(), CKM_AES_GCM), mechanisms.end());
  EXPECT_EQ(module_->mechanism_info(slot_, CKM_AES_GCM).ulMaxKeySize >= 32, true);
}

// p11-kit reads module files from /usr/share/p11-kit/modules, /etc/pkcs11/modules and
// ~/.config/pkcs11/modules (the last one not when running as root). The test points p11-kit
// at a temporary folder with p11_kit_override_system_files, the hook p11-kit exports for
// its own tests, so no system file is touched and parallel tests don't meet. p11-kit keeps
// the registry it read for the life of the process, so one test covers both tokens.
TEST(ModuleByName, LoadsByP11KitModuleNameHonouringInitReserved) {
  testsupport::TempDir config_dir("kms-p11kit");
  std::vector<std::unique_ptr<testsupport::TestToken>> tokens;
  for (auto kind : {testsupport::TokenKind::softhsm, testsupport::TokenKind::nss}) {
    tokens.push_back(testsupport::TestToken::create(kind));
    const auto& token = *tokens.back();
    std::ofstream file(config_dir.path() + "/kms-test-" + token_kind_name(kind) + ".module");
    file << "module: " << token.module_path() << "\n";
    const auto reserved = token.module_config().init_reserved;
    if (reserved) file << "x-init-reserved: " << *reserved << "\n";
  }
  const std::string none = config_dir.path() + "/none";
  p11_kit_override_system_files(none.c_str(), none.c_str(), config_dir.path().c_str(), none.c_str(),
                                none.c_str());
  struct Restore {
    ~Restore() { restore_p11kit_files(); }
  } restore;

  for (const auto& token : tokens) {
    SCOPED_TRACE(token_kind_name(token->kind()));
    const std::string name = "kms-test-" + token_kind_name(token->kind());
    const auto by_name = hsm::Module::load({name, std::nullopt});
    EXPECT_EQ(by_name->library_path(), token->module_path());
    EXPECT_EQ(by_name->config().init_reserved, token->module_config().init_reserved);
    // NSS only finds its database through x-init-reserved: logging in proves it was used.
    const auto selected = hsm::TokenUri::parse(token->uri()).select(*by_name);
    hsm::Session session(by_name, selected.slot);
    session.login(CKU_USER, token->user_pin());
    EXPECT_EQ(session.state(), CKS_RW_USER_FUNCTIONS);
  }
}

TEST_P(ModuleTest, UnknownP11KitModuleNameIsAnError) {
  try {
    hsm::Module::load({"no-such-module-anywhere", std::nullopt});
    FAIL() << "loaded a module that is not configured";
  } catch (const hsm::Error& error) {
    EXPECT_NE(std::string(error.what()).find("no-such-module-anywhere"), std::string::npos);
  }
}

TEST_P(ModuleTest, MissingLibraryPathIsAnError) {
  EXPECT_THROW(hsm::Module::load({"/nonexistent/libpkcs11.so", std::nullopt}), hsm::Error);
}

TEST_P(ModuleTest, SecondModuleOfTheSameLibrarySharesTheInitialisation) {
  auto second = hsm::Module::load(token_->module_config());
  EXPECT_EQ(second->functions(), module_->functions());
  hsm::Session a(module_, slot_);
  a.login(CKU_USER, token_->user_pin());
  second.reset();  // must not finalise the library under the first Module
  EXPECT_TRUE(a.valid());
  EXPECT_EQ(a.state(), CKS_RW_USER_FUNCTIONS);
}

TEST_P(ModuleTest, SameLibraryWithOtherInitArgumentsIsRefused) {
  auto config = token_->module_config();
  config.init_reserved = "configdir='sql:/nonexistent' certPrefix='' keyPrefix='' flags=";
  try {
    hsm::Module::load(config);
    FAIL() << "a second initialisation with other arguments was accepted";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.kind(), hsm::ErrorKind::invalid_argument) << error.what();
    EXPECT_FALSE(error.recoverable());
  }
}

TEST_P(ModuleTest, ReinitializeKillsOldSessionsWithoutTouchingTheLibrary) {
  hsm::Session old_session(module_, slot_);
  old_session.login(CKU_USER, token_->user_pin());
  const auto generation = module_->generation();
  EXPECT_EQ(module_->reinitialize(), generation + 1);
  EXPECT_EQ(module_->reinitialize_if(generation), generation + 1);  // already done: no-op
  EXPECT_FALSE(old_session.valid());
  try {
    old_session.state();
    FAIL() << "a session from before the re-initialisation still answers";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), CKR_SESSION_HANDLE_INVALID);
  }
  hsm::Session fresh(module_, slot_);
  fresh.login(CKU_USER, token_->user_pin());
  EXPECT_EQ(fresh.state(), CKS_RW_USER_FUNCTIONS);
}

TEST_P(ModuleTest, UriSelectsTheTokenAndNoMatchListsTheTokensThatExist) {
  const auto uri = hsm::TokenUri::parse(token_->uri());
  const auto selected = uri.select(*module_);
  EXPECT_EQ(selected.label, token_->token_label());
  EXPECT_TRUE(uri.matches(selected.info));

  const auto by_serial =
      hsm::TokenUri::parse(token_->uri() + ";serial=" + selected.serial).select(*module_);
  EXPECT_EQ(by_serial.slot, selected.slot);

  try {
    hsm::TokenUri::parse("pkcs11:token=no-such-token").select(*module_);
    FAIL() << "a URI naming no token selected one";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.kind(), hsm::ErrorKind::not_found);
    EXPECT_FALSE(error.device_lost());  // "no such token" must never trigger re-initialisation
    const std::string message = error.what();
    EXPECT_NE(message.find("no-such-token"), std::string::npos) << message;
    EXPECT_NE(message.find("'" + selected.label + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(selected.manufacturer), std::string::npos) << message;
    EXPECT_NE(message.find("serial '" + selected.serial + "'"), std::string::npos) << message;
  }
  EXPECT_THROW(hsm::TokenUri::parse(token_->uri() + ";manufacturer=Nobody").select(*module_),
               hsm::Error);
  EXPECT_THROW(hsm::TokenUri::parse("pkcs11:library-manufacturer=Nobody").select(*module_),
               hsm::Error);
}

TEST_P(ModuleTest, UserLoginWithThePinFromTheFileSucceeds) {
  hsm::Session session(module_, slot_);
  session.login(CKU_USER, token_->user_pin());
  EXPECT_EQ(session.state(), CKS_RW_USER_FUNCTIONS);
  EXPECT_TRUE(session.valid());
  session.login(CKU_USER, token_->user_pin());  // already logged in: not an error
}

TEST_P(ModuleTest, WrongPinNamesCkrPinIncorrect) {
  try {
    hsm::SessionPool pool(module_, slot_, hsm::SecureString("wrong-pin-0000"));
    FAIL() << "login with a wrong PIN succeeded";
  } catch (const hsm::Error& error) {
    EXPECT_EQ(error.rv(), CKR_PIN_INCORRECT);
    EXPECT_EQ(error.function(), "C_Login");
    EXPECT_NE(std::string(error.what()).find("CKR_PIN_INCORRECT"), std::string::npos)
        << error.what();
  }
}

TEST_P(ModuleTest, CallObserverSeesEveryCallWithItsResult) {
  std::mutex mutex;
  std::map<std::string, int> calls;
  std::map<std::string, CK_RV> last_rv;
  std::chrono::nanoseconds measured{0};  // a steady clock never goes back: test the sum
  hsm::set_call_observer([&](const char* function, CK_RV rv, std::chrono::nanoseconds elapsed) {
    std::lock_guard lock(mutex);
    ++calls[function];
    last_rv[function] = rv;
    measured += elapsed;
  });
  {
    hsm::Session session(module_, slot_);
    EXPECT_THROW(session.login(CKU_USER, hsm::SecureString("wrong-pin-0000")), hsm::Error);
    session.login(CKU_USER, token_->user_pin());
    session.state();
  }
  {
    std::lock_guard lock(mutex);
    EXPECT_GT(measured.count(), 0) << "the observer is handed no call durations";
  }
  hsm::set_call_observer({});
  hsm::Session unobserved(module_, slot_);
  std::lock_guard lock(mutex);
  EXPECT_EQ(calls["C_OpenSession"], 1);
  EXPECT_EQ(calls["C_Login"], 2);
  EXPECT_EQ(last_rv["C_Login"], CKR_OK);
  EXPECT_EQ(calls["C_GetSessionInfo"], 1);
  EXPECT_EQ(calls["C_CloseSession"], 1);
}

HSM_INSTANTIATE_FOR_TOKENS(ModuleTest);

// ---- no token needed

TEST(TokenUri, ParsesObjectPinAndModuleAttributes) {
  const auto uri = hsm::TokenUri::parse(
      "pkcs11:token=kms;object=kms-master;id=%01%02;pin-source=file:/run/kms.pin"
      "?module-name=softhsm2&pin-value=1234");
  EXPECT_EQ(uri.object_label(), "kms-master");
  EXPECT_EQ(uri.object_id(), (hsm::Bytes{1, 2}));
  EXPECT_EQ(uri.pin_source(), "file:/run/kms.pin");
  ASSERT_TRUE(uri.pin_value().has_value());
  EXPECT_EQ(uri.pin_value()->value(), "1234");
  EXPECT_EQ(uri.module_name(), "softhsm2");
  EXPECT_FALSE(uri.module_path().has_value());
  const hsm::TokenUri copy = uri;
  EXPECT_EQ(copy.object_label(), "kms-master");
  EXPECT_EQ(copy.text(), uri.text());
}

// The error parsing `text` throws; a test failure (and nothing) if it parses.
std::optional<hsm::Error> uri_refusal(const std::string& text) {
  try {
    hsm::TokenUri::parse(text);
  } catch (const hsm::Error& error) {
    return error;
  }
  ADD_FAILURE() << "accepted " << text;
  return std::nullopt;
}

TEST(TokenUri, UnrecognisedAttributesAreNamedNotIgnored) {
  // p11-kit would ignore "tokn" and match every token.
  for (const auto& [text, name] :
       {std::pair{"pkcs11:tokn=kms", "tokn"}, std::pair{"pkcs11:token=kms;seriall=1", "seriall"},
        std::pair{"pkcs11:token=kms?modul-path=/x.so", "modul-path"}}) {
    const auto error = uri_refusal(text);
    ASSERT_TRUE(error);
    EXPECT_EQ(error->kind(), hsm::ErrorKind::invalid_argument);
    EXPECT_NE(std::string(error->what()).find(name), std::string::npos) << error->what();
  }
  const auto uri = hsm::TokenUri::parse(
      "pkcs11:token=kms;serial=1;slot-id=3;library-description=x?module-path=/a.so&pin-source=/p");
  EXPECT_EQ(uri.module_path(), "/a.so");
}

TEST(TokenUri, MalformedUrisAreTypedErrors) {
  for (const char* text : {"http://example.com", "pkcs11:token=%zz", "pkcs11:id=%0"}) {
    const auto error = uri_refusal(text);
    ASSERT_TRUE(error);
    EXPECT_EQ(error->kind(), hsm::ErrorKind::invalid_argument);
    EXPECT_EQ(error->rv(), static_cast<CK_RV>(CKR_OK));  // no invented PKCS#11 code
    EXPECT_EQ(error->function(), "pkcs11 URI");
  }
}

TEST(PinSource, ReadsTheFirstLineOfAFileOrAnEnvironmentVariable) {
  testsupport::TempDir dir;
  const std::string path = dir.path() + "/pin";
  testsupport::write_private_file(path, "s3cret\nignored\n");
  EXPECT_EQ((hsm::PinSource{path, std::nullopt}.read().value()), "s3cret");
  EXPECT_EQ((hsm::PinSource{"file:" + path, std::nullopt}.read().value()), "s3cret");
  setenv("KMS_TEST_PIN_SOURCE", "from-env", 1);
  EXPECT_EQ((hsm::PinSource{std::nullopt, "KMS_TEST_PIN_SOURCE"}.read().value()), "from-env");
  unsetenv("KMS_TEST_PIN_SOURCE");
  EXPECT_THROW((hsm::PinSource{std::nullopt, "KMS_TEST_PIN_SOURCE"}.read()), hsm::Error);
  EXPECT_THROW((hsm::PinSource{dir.path() + "/missing", std::nullopt}.read()), hsm::Error);
  EXPECT_THROW(hsm::PinSource{}.read(), hsm::Error);
}

// A PIN file group or others may read or write is refused, naming the file and its mode,
// unless KMS_ALLOW_INSECURE_PIN_FILE=1 (exactly "1"): then it is read, with a warning.
TEST(PinSource, RefusesAPinFileThatGroupOrOthersMayAccess) {
  testsupport::TempDir dir;
  const std::string path = dir.path() + "/user.pin";
  unsetenv(hsm::kAllowInsecurePinFileVariable);
  for (const unsigned mode : {0644U, 0640U, 0604U, 0620U, 0602U, 0660U, 0610U}) {
    SCOPED_TRACE(mode);
    testsupport::write_private_file(path, "s3cret\n", mode);
    try {
      (hsm::PinSource{path, std::nullopt}.read());
      FAIL() << "accepted a PIN file of mode " << std::oct << mode;
    } catch (const hsm::Error& error) {
      EXPECT_EQ(error.kind(), hsm::ErrorKind::pin_unavailable);
      const std::string what = error.what();
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      EXPECT_NE(what.find("PIN file " + path + " has mode 0"), std::string::npos) << what;
      char octal[8];
      std::snprintf(octal, sizeof octal, "%04o", mode);
      EXPECT_NE(what.find(octal), std::string::npos) << what;
      EXPECT_NE(what.find("KMS_ALLOW_INSECURE_PIN_FILE=1"), std::string::npos) << what;
      EXPECT_EQ(what.find("s3cret"), std::string::npos) << "the PIN is in the message";
    }
  }
  // Owner-only modes are accepted without a warning.
  for (const unsigned mode : {0600U, 0400U, 0700U}) {
    SCOPED_TRACE(mode);
    testsupport::write_private_file(path, "s3cret\n", mode);
    std::string warning;
    EXPECT_EQ((hsm::PinSource{path, std::nullopt}.read(&warning).value()), "s3cret");
    EXPECT_TRUE(warning.empty()) << warning;
  }
  // The override accepts it and says so; anything but "1" does not override.
  testsupport::write_private_file(path, "s3cret\n", 0644);
  for (const char* value : {"0", "true", "yes", ""}) {
    setenv(hsm::kAllowInsecurePinFileVariable, value, 1);
    EXPECT_THROW((hsm::PinSource{path, std::nullopt}.read()), hsm::Error) << value;
  }
  setenv(hsm::kAllowInsecurePinFileVariable, "1", 1);
  std::string warning;
  EXPECT_EQ((hsm::PinSource{path, std::nullopt}.read(&warning).value()), "s3cret");
  EXPECT_NE(warning.find("PIN file " + path + " has mode 0644"), std::string::npos) << warning;
  EXPECT_NE(warning.find("accepted because KMS_ALLOW_INSECURE_PIN_FILE=1"), std::string::npos)
      << warning;
  unsetenv(hsm::kAllowInsecurePinFileVariable);
}

TEST(Error, NamesReturnValuesAndClassifiesThem) {
  EXPECT_EQ(hsm::rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
  EXPECT_EQ(hsm::rv_name(0x80001234UL), "CKR_0x80001234");
  const hsm::Error error(CKR_DEVICE_ERROR, "C_Decrypt", "subscriber sip:a@b");
  EXPECT_STREQ(error.what(), "C_Decrypt failed: CKR_DEVICE_ERROR (subscriber sip:a@b)");
  EXPECT_TRUE(error.device_lost());
  EXPECT_FALSE(error.session_lost());
  EXPECT_TRUE(hsm::Error(CKR_SESSION_HANDLE_INVALID, "f", "").session_lost());
  EXPECT_TRUE(hsm::Error(CKR_KEY_HANDLE_INVALID, "f", "").handle_lost());
  EXPECT_TRUE(hsm::Error(CKR_USER_NOT_LOGGED_IN, "f", "").not_logged_in());
  EXPECT_NO_THROW(hsm::check(CKR_OK, "f"));
  EXPECT_THROW(hsm::check(CKR_GENERAL_ERROR, "f"), hsm::Error);
}

TEST(SecureBytes, KeepsContentsAcrossGrowthAndCopies) {
  hsm::SecureBytes bytes(hsm::Bytes{1, 2, 3});
  bytes.resize(100);
  EXPECT_EQ(bytes[2], 3);
  bytes.resize(2);
  EXPECT_EQ(bytes.size(), 2u);
  hsm::SecureBytes copy = bytes;
  hsm::SecureBytes moved = std::move(bytes);
  EXPECT_TRUE(bytes.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_TRUE(hsm::equal_constant_time(copy.view(), moved.view()));
  EXPECT_FALSE(hsm::equal_constant_time(copy.view(), hsm::Bytes{1}));
}

}  // namespace
}  // namespace hsmtest
