// Runs the real kms-provision binary against a fresh test token and SQLite file, and
// snapshots the token and the database to prove that failures leave them unchanged.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "key_proof.h"
#include "software_kdf.h"
#include "support/test_token.h"
#include "token_setup.h"
#include "tokens/kdf.h"
#include "tokens/key_database.h"
#include "tokens/key_store.h"
#include "tokens/token_config.h"
#include "tokens/token_context.h"

namespace clitest {

using testkdf::Bytes;

inline std::string hex(const Bytes& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

inline Bytes unhex(const std::string& text) {
  Bytes out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// Owner-only (0600): PIN and transport key files must be, the rest may as well be.
inline void write_file(const std::string& path, const std::string& text) {
  testsupport::write_private_file(path, text);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The last non-comment line of an export file, decoded from hex.
inline Bytes exported_key(const std::string& path) {
  std::istringstream in(read_file(path));
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#') last = line;
  }
  return unhex(last);
}

class CliTest : public ::testing::TestWithParam<testsupport::TokenKind> {
 protected:
  void SetUp() override {
    token_ = testsupport::TestToken::create(GetParam());
    dir_ = std::make_unique<testsupport::TempDir>("kms-cli-test");
    database_ = dir_->path() + "/kms.db";
    transport_ = testkdf::random_bytes(32);
    transport_file_ = dir_->path() + "/transport.key";
    write_file(transport_file_, hex(transport_) + "\n");
  }
  void TearDown() override { token_.reset(); }

  std::vector<std::string> base_args() const {
    const hsm::ModuleConfig module = token_->module_config();
    std::vector<std::string> args{KMS_PROVISION_PATH, "--module",    module.module,
                                  "--token-uri",      token_->uri(), "--pin-file",
                                  token_->pin_file(), "--database",  database_};
    if (module.init_reserved) {
      args.push_back("--init-reserved");
      args.push_back(*module.init_reserved);
    }
    return args;
  }

  testsupport::CommandResult cli(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = base_args();
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::run_command(argv, token_->environment());
  }

  testsupport::CommandResult cli_raw(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{KMS_PROVISION_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::run_command(argv, token_->environment());
  }

  void init() {
    const auto result = cli({"init", "--transport-key-file", transport_file_});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  // A fresh random key of `size` bytes wrapped under the transport key, as hex (for imports
  // whose key value the test does not need).
  std::string random_wrapped_hex(std::size_t size = 32) const {
    return hex(testkdf::wrap_pad(transport_, testkdf::random_bytes(size)));
  }

  // Imports a personalisation key of known value under the transport key.
  Bytes personalisation_key(const std::string& label) {
    const Bytes value = testkdf::random_bytes(32);
    const auto result = cli({"personalisation-key", "import", "--label", label, "--wrapped-hex",
                             hex(testkdf::wrap_pad(transport_, value))});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return value;
  }

  tokens::TokenConfig config() const { return tokentest::config_for(*token_, database_); }

  std::unique_ptr<tokens::TokenContext> open_token() const {
    return tokens::TokenContext::open(config());
  }

  // Whether the current key of (kind, identity) in the token holds `value`.
  bool stored_key_holds(tokens::IdentityKind kind, const std::string& identity,
                        const Bytes& value) const {
    auto context = open_token();
    tokens::KeyDatabase db(database_);
    tokens::KeyStore store(*context, db, 4);
    return testkdf::key_holds(*context, store.resolve(kind, identity).handle(), value);
  }

  // Labels of every token object (sorted), read in this process.
  std::vector<std::string> token_objects() const {
    auto context = open_token();
    return context->pool().run([](hsm::Session& session) {
      hsm::AttributeTemplate match;
      match.set_bool(CKA_TOKEN, true);
      std::vector<std::string> labels;
      for (CK_OBJECT_HANDLE handle : session.find(std::move(match), 1 << 20)) {
        labels.push_back(session.get_string(handle, CKA_LABEL));
      }
      std::sort(labels.begin(), labels.end());
      return labels;
    });
  }

  // A key derived in the token from kms/master with (label, context), read out through a
  // wrap under a one-time wrapping key of known value: the same inputs give the same bytes
  // for as long as M is the same key, so it changes exactly when M is replaced.
  Bytes master_derived(const std::string& label, const Bytes& context) const {
    auto token = open_token();
    const tokens::TokenProfile& profile = token->profile();
    const Bytes kek = testkdf::random_bytes(32);
    const Bytes wrapped = token->pool().run([&](hsm::Session& session) {
      const auto master =
          session.find_one(hsm::AttributeTemplate()
                               .set_ulong(CKA_CLASS, CKO_SECRET_KEY)
                               .set_string(CKA_LABEL, std::string(tokens::kMasterKeyLabel)));
      if (!master) throw std::runtime_error("no kms/master in the token");
      hsm::ObjectGuard derived(
          session, tokens::derive(session, profile, *master, testkdf::label(label), context,
                                  tokens::templates::media_key()));
      hsm::AttributeTemplate wrapping;
      wrapping.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
          .set_ulong(CKA_KEY_TYPE, CKK_AES)
          .set_bool(CKA_TOKEN, false)
          .set_bool(CKA_PRIVATE, true)
          .set_bool(CKA_SENSITIVE, true)
          .set_bool(CKA_EXTRACTABLE, false)
          .set_bool(CKA_WRAP, true)
          .set_bytes(CKA_VALUE, kek);
      hsm::ObjectGuard kek_object(session, session.create_object(std::move(wrapping)));
      hsm::Mechanism mechanism(profile.wrap_mechanism);
      return session.wrap_key(mechanism, kek_object.get(), derived.get());
    });
    return testkdf::unwrap_pad(kek, wrapped);
  }

  // A boolean attribute and CKA_ID of the one token object labelled `label`.
  bool object_flag(const std::string& label, CK_ATTRIBUTE_TYPE type) const {
    auto token = open_token();
    return token->pool().run(
        [&](hsm::Session& session) { return session.get_bool(one_object(session, label), type); });
  }
  Bytes object_id(const std::string& label) const {
    auto token = open_token();
    return token->pool().run([&](hsm::Session& session) {
      return session.get_bytes(one_object(session, label), CKA_ID);
    });
  }

  // Generates an AES key object in the token from this process (e.g. one that collides with
  // what kms-provision would create).
  void generate_token_key(hsm::AttributeTemplate attributes) const {
    auto token = open_token();
    token->pool().run([&](hsm::Session& session) {
      tokens::generate_aes_key(session, std::move(attributes));
      return 0;
    });
  }

  // base_args() without `option` and its value (e.g. "--pin-file").
  std::vector<std::string> base_args_without(const std::string& option) const {
    std::vector<std::string> args = base_args();
    const auto it = std::find(args.begin(), args.end(), option);
    if (it != args.end()) args.erase(it, it + 2);
    return args;
  }

  // Every record of the database, as text ("none" when there is no file).
  std::string database_snapshot() const {
    if (!std::filesystem::exists(database_)) return "none";
    tokens::KeyDatabase db(database_);
    std::string out;
    for (const auto& r : db.list()) {
      out += std::string(tokens::kind_name(r.kind)) + " " + r.identity + " " +
             std::string(tokens::status_name(r.status)) + " v" + std::to_string(r.key_version) +
             " " + hex(r.wrapped_key) + "\n";
    }
    return out;
  }

  static CK_OBJECT_HANDLE one_object(hsm::Session& session, const std::string& label) {
    hsm::AttributeTemplate match;
    match.set_bool(CKA_TOKEN, true).set_string(CKA_LABEL, label);
    const auto handle = session.find_one(std::move(match));
    if (!handle) throw std::runtime_error("no token object labelled " + label);
    return *handle;
  }

  std::unique_ptr<testsupport::TestToken> token_;
  std::unique_ptr<testsupport::TempDir> dir_;
  std::string database_;
  Bytes transport_;
  std::string transport_file_;
};

inline std::string kind_param_name(const ::testing::TestParamInfo<testsupport::TokenKind>& info) {
  return testsupport::token_kind_name(info.param);
}

// One line on stderr (plus nothing else).
inline bool one_line(const std::string& text) {
  return !text.empty() && text.find('\n') == text.size() - 1;
}

}  // namespace clitest
