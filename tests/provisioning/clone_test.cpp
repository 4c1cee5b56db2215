// The key cloning ceremony (kms-provision clone) on real SoftHSM and NSS tokens: fresh
// tokens, the ceremony, then the same derivations, stored blobs and key check values in
// every token; no extractable key left on SoftHSM; bad inputs refused with their exit codes,
// leaving the token as it was.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>

#include "cli_fixture.h"
#include "hsm/error.h"
#include "key_proof.h"

namespace {

using clitest::Bytes;
using clitest::hex;
using testsupport::TokenKind;

const std::vector<std::string> kKmsKeys = {"kms/master", "kms/storage", "kms/transport"};

// AES-256-ECB(key, 0^16), first 3 bytes: the documented KCV of a key component.
std::string component_kcv(const Bytes& key) {
  unsigned char out[32];
  int length = 0;
  const unsigned char zero[16] = {};
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  EVP_EncryptUpdate(ctx, out, &length, zero, 16);
  EVP_CIPHER_CTX_free(ctx);
  return hex(Bytes(out, out + 3));
}

class CloneTest : public ::testing::TestWithParam<TokenKind> {
 protected:
  struct Node {
    std::unique_ptr<testsupport::TestToken> token;
    std::string database;
  };

  void SetUp() override {
    dir_ = std::make_unique<testsupport::TempDir>("kms-clone-test");
    for (int i = 0; i < 3; ++i) {
      nodes_.push_back(Node{testsupport::TestToken::create(GetParam()),
                            dir_->path() + "/kms" + std::to_string(i) + ".db"});
    }
    for (int i = 0; i < 3; ++i) {
      component_values_.push_back(testkdf::random_bytes(32));
      components_.push_back(dir_->path() + "/component" + std::to_string(i + 1));
      clitest::write_file(components_.back(), hex(component_values_.back()) + "\n");
    }
    transport_ = testkdf::random_bytes(32);
    transport_file_ = dir_->path() + "/transport.key";
    clitest::write_file(transport_file_, hex(transport_) + "\n");
    clone_file_ = dir_->path() + "/kms-keys.clone";
  }

  testsupport::CommandResult cli(const Node& node, const std::vector<std::string>& args) const {
    const hsm::ModuleConfig module = node.token->module_config();
    std::vector<std::string> argv{KMS_PROVISION_PATH,     "--module",        module.module,
                                  "--token-uri",          node.token->uri(), "--pin-file",
                                  node.token->pin_file(), "--database",      node.database};
    if (module.init_reserved) {
      argv.push_back("--init-reserved");
      argv.push_back(*module.init_reserved);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::run_command(argv, node.token->environment());
  }

  // clone export on `node` with components 1 and 2 (the ceremony's first token).
  testsupport::CommandResult export_keys(const Node& node, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{
        "clone",       "export",       "--component",          components_[0],
        "--component", components_[1], "--transport-key-file", transport_file_,
        "--out",       clone_file_};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(node, args);
  }
  testsupport::CommandResult import_keys(const Node& node, std::vector<std::string> extra = {},
                                         int second_component = 1) {
    std::vector<std::string> args{"clone",
                                  "import",
                                  clone_file_,
                                  "--component",
                                  components_[0],
                                  "--component",
                                  components_[second_component]};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(node, args);
  }

  // Runs `work` on the node's token opened in this process. SoftHSM reads SOFTHSM2_CONF at
  // C_Initialize, and the module is finalised when the context closes, so one node at a
  // time.
  template <typename Work>
  auto in_token(const Node& node, const std::string& database, Work work) const {
    for (const auto& [name, value] : node.token->environment()) {
      setenv(name.c_str(), value.c_str(), 1);
    }
    auto context = tokens::TokenContext::open(tokentest::config_for(*node.token, database));
    return work(*context);
  }

  // KDF(M, label, context) computed in the node's token, wrapped under `kek` (RFC 5649 is
  // deterministic: equal outputs mean equal children, so equal M).
  Bytes master_child_wrapped(const Node& node, const Bytes& kek) const {
    return in_token(node, node.database, [&](tokens::TokenContext& token) {
      const tokens::TokenProfile& profile = token.profile();
      return token.pool().run([&](hsm::Session& session) {
        const auto master = session.find_one(hsm::AttributeTemplate()
                                                 .set_ulong(CKA_CLASS, CKO_SECRET_KEY)
                                                 .set_string(CKA_LABEL, "kms/master"));
        if (!master) throw std::runtime_error("no kms/master");
        hsm::ObjectGuard child(
            session,
            tokens::derive(session, profile, *master, tokens::protocol_label("media-chair"),
                           testkdf::to_bytes("conference 1"), tokens::templates::media_key()));
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
        return session.wrap_key(mechanism, kek_object.get(), child.get());
      });
    });
  }

  // Labels of every token object (sorted).
  std::vector<std::string> token_objects(const Node& node) const {
    return in_token(node, node.database, [&](tokens::TokenContext& token) {
      return token.pool().run([](hsm::Session& session) {
        hsm::AttributeTemplate match;
        match.set_bool(CKA_TOKEN, true);
        std::vector<std::string> labels;
        for (CK_OBJECT_HANDLE handle : session.find(std::move(match), 1 << 20)) {
          labels.push_back(session.get_string(handle, CKA_LABEL));
        }
        std::sort(labels.begin(), labels.end());
        return labels;
      });
    });
  }

  bool key_flag(const Node& node, const std::string& label, CK_ATTRIBUTE_TYPE type) const {
    return in_token(node, node.database, [&](tokens::TokenContext& token) {
      return token.pool().run([&](hsm::Session& session) {
        hsm::AttributeTemplate match;
        match.set_bool(CKA_TOKEN, true).set_string(CKA_LABEL, label);
        const auto handle = session.find_one(std::move(match));
        if (!handle) throw std::runtime_error("no token object labelled " + label);
        return session.get_bool(*handle, type);
      });
    });
  }

  // The KCVs `status --json` prints, by label.
  std::map<std::string, std::string> kcvs(const Node& node) const {
    const auto result = cli(node, {"--json", "status"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    std::map<std::string, std::string> out;
    const boost::json::value status = boost::json::parse(result.out);
    for (const auto& item : status.at("kcv").as_object()) {
      out[std::string(item.key())] = std::string(item.value().as_string());
    }
    return out;
  }

  std::unique_ptr<testsupport::TempDir> dir_;
  std::vector<Node> nodes_;
  std::vector<Bytes> component_values_;
  std::vector<std::string> components_;
  Bytes transport_;
  std::string transport_file_;
  std::string clone_file_;
};

// The ceremony records the keys' check values in the database the nodes share (kmsd's key
// check at start): export records them, every import finds its token's equal, and
// `key-check` on each node says so; a token whose keys were replaced afterwards differs.
TEST_P(CloneTest, CloneRecordsTheKeyCheckValuesThatEveryImportedTokenMatches) {
  std::vector<Node> shared;
  for (Node& node : nodes_) shared.push_back(Node{std::move(node.token), nodes_[0].database});
  auto result = export_keys(shared[0]);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto kcv = kcvs(shared[0]);
  EXPECT_NE(result.out.find("key check recorded  kms/master " + kcv.at("kms/master")),
            std::string::npos)
      << result.out;
  for (std::size_t i = 1; i < shared.size(); ++i) {
    result = import_keys(shared[i]);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_NE(result.out.find("key check matches   kms/storage " + kcv.at("kms/storage")),
              std::string::npos)
        << result.out;
    const auto checked = cli(shared[i], {"key-check"});
    EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err;
    EXPECT_NE(checked.out.find("key kms/master " + kcv.at("kms/master") + " matches: recorded"),
              std::string::npos)
        << checked.out;
    EXPECT_NE(checked.out.find("by kms-provision clone export"), std::string::npos) << checked.out;
    // SoftHSM keeps the transport key's check blob, so its KCV is recorded and compared too.
    const bool check_blob_stored = GetParam() == TokenKind::softhsm;
    const std::string transport = check_blob_stored
                                      ? "key kms/transport " + kcv.at("kms/transport") + " matches"
                                      : "key kms/transport ------ no kcv";
    EXPECT_NE(checked.out.find(transport), std::string::npos) << checked.out;
  }
  // Node 2's keys replaced on their own (against another database): it no longer matches.
  Node elsewhere{std::move(shared[2].token), dir_->path() + "/elsewhere.db"};
  ASSERT_EQ(cli(elsewhere, {"init", "--force"}).exit_code, 0);
  elsewhere.database = nodes_[0].database;
  const auto differs = cli(elsewhere, {"key-check"});
  EXPECT_EQ(differs.exit_code, 15) << differs.out << differs.err;
  EXPECT_NE(differs.out.find("kms/master " + kcvs(elsewhere).at("kms/master") + " DIFFERS"),
            std::string::npos)
      << differs.out;
  shared[2].token = std::move(elsewhere.token);
  for (std::size_t i = 0; i < shared.size(); ++i) nodes_[i].token = std::move(shared[i].token);
}

TEST_P(CloneTest, EveryTokenGetsTheSameKeys) {
  auto result = export_keys(nodes_[0]);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("component 1 kcv " + component_kcv(component_values_[0])),
            std::string::npos)
      << result.out;
  Bytes cloning_key(32);
  for (int i = 0; i < 32; ++i) cloning_key[i] = component_values_[0][i] ^ component_values_[1][i];
  EXPECT_NE(result.out.find("cloning key kcv " + component_kcv(cloning_key)), std::string::npos)
      << result.out;
  for (std::size_t i = 1; i < nodes_.size(); ++i) {
    result = import_keys(nodes_[i]);
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  // The KCVs: one per KMS key, equal in every token.
  // NSS softoken keeps no token data objects: no stored check blob, no transport KCV.
  const bool check_blob_stored = GetParam() == TokenKind::softhsm;
  const auto first = kcvs(nodes_[0]);
  EXPECT_EQ(first.size(), check_blob_stored ? 3u : 2u);
  for (const auto& label : kKmsKeys) {
    EXPECT_EQ(first.count(label), label != "kms/transport" || check_blob_stored ? 1u : 0u) << label;
  }
  for (std::size_t i = 1; i < nodes_.size(); ++i) EXPECT_EQ(kcvs(nodes_[i]), first);

  // M: the same child in every token.
  const Bytes kek = testkdf::random_bytes(32);
  const Bytes child = master_child_wrapped(nodes_[0], kek);
  for (std::size_t i = 1; i < nodes_.size(); ++i) {
    EXPECT_EQ(master_child_wrapped(nodes_[i], kek), child);
  }

  // Transport and storage: the same key imported on two nodes is stored as the same blob,
  // and a node opens the other node's database.
  const Bytes alice = testkdf::random_bytes(32);
  const std::string wrapped = hex(testkdf::wrap_pad(transport_, alice));
  for (int i = 0; i < 2; ++i) {
    result = cli(nodes_[i],
                 {"subscriber", "import", "sip:alice@ims.example.net", "--wrapped-hex", wrapped});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }
  const auto blob = [](const std::string& database) {
    tokens::KeyDatabase db(database);
    return db.find(tokens::IdentityKind::subscriber, "sip:alice@ims.example.net")->wrapped_key;
  };
  EXPECT_EQ(blob(nodes_[0].database), blob(nodes_[1].database));
  EXPECT_TRUE(in_token(nodes_[2], nodes_[0].database, [&](tokens::TokenContext& token) {
    tokens::KeyDatabase db(nodes_[0].database);
    tokens::KeyStore store(token, db, 4);
    return testkdf::key_holds(
        token,
        store.resolve(tokens::IdentityKind::subscriber, "sip:alice@ims.example.net").handle(),
        alice);
  }));

  // The cloned keys are what init makes: init checks them and changes nothing.
  for (const auto& node : nodes_) {
    result = cli(node, {"init"});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_NE(result.out.find("already initialised"), std::string::npos) << result.out;
    std::vector<std::string> expected = kKmsKeys;
    if (check_blob_stored) expected.push_back("kms/transport/check");
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(token_objects(node), expected);
  }

  // No key can leave a SoftHSM token after the ceremony (NSS: M is extractable with
  // CKA_WRAP_WITH_TRUSTED on its profile, docs/ARCHITECTURE.md).
  for (const auto& node : nodes_) {
    for (const auto& label : kKmsKeys) {
      SCOPED_TRACE(label);
      EXPECT_TRUE(key_flag(node, label, CKA_SENSITIVE));
      EXPECT_FALSE(key_flag(node, label, CKA_MODIFIABLE));
      const bool nss_master = GetParam() == TokenKind::nss && label == "kms/master";
      EXPECT_EQ(key_flag(node, label, CKA_EXTRACTABLE), nss_master);
    }
  }
  // The clone file holds no key in plaintext.
  const std::string file = clitest::read_file(clone_file_);
  EXPECT_EQ(file.find(hex(transport_)), std::string::npos);
  EXPECT_NE(file.find("# profile: " + nodes_[0].token->profile_name()), std::string::npos);
}

TEST_P(CloneTest, ATokenWithOtherKeysHasOtherKcvs) {
  ASSERT_EQ(export_keys(nodes_[0]).exit_code, 0);
  auto result = cli(nodes_[1], {"init", "--transport-key-file", transport_file_});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto cloned = kcvs(nodes_[0]);
  const auto other = kcvs(nodes_[1]);
  EXPECT_NE(other.at("kms/master"), cloned.at("kms/master"));
  EXPECT_NE(other.at("kms/storage"), cloned.at("kms/storage"));
  // A transport key made by init has no check blob: no KCV is claimed for it.
  EXPECT_EQ(other.count("kms/transport"), 0u);
  result = cli(nodes_[1], {"status"});
  EXPECT_NE(result.out.find("kcv      kms/master " + other.at("kms/master") + "\n"),
            std::string::npos)
      << result.out;
}

TEST_P(CloneTest, WrongComponentsAreRefusedAndChangeNothing) {
  ASSERT_EQ(export_keys(nodes_[0]).exit_code, 0);
  auto result = import_keys(nodes_[1], {}, 2);  // component 3 instead of 2
  EXPECT_EQ(result.exit_code, 11) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("KCV"), std::string::npos) << result.err;
  EXPECT_TRUE(token_objects(nodes_[1]).empty());

  // One component is not split knowledge.
  result = cli(nodes_[1], {"clone", "import", clone_file_, "--component", components_[0]});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  // No component at all: a usage error from the command line.
  result = cli(nodes_[1], {"clone", "import", clone_file_});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_TRUE(token_objects(nodes_[1]).empty());
}

TEST_P(CloneTest, BadCloneFilesAreRefusedAndChangeNothing) {
  ASSERT_EQ(export_keys(nodes_[0]).exit_code, 0);
  const std::string good = clitest::read_file(clone_file_);
  const auto refused = [&](const std::string& text, int code, const std::string& message) {
    SCOPED_TRACE(message);
    clitest::write_file(clone_file_, text);
    const auto result = import_keys(nodes_[1]);
    EXPECT_EQ(result.exit_code, code) << result.err;
    EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
    EXPECT_NE(result.err.find(message), std::string::npos) << result.err;
    EXPECT_TRUE(token_objects(nodes_[1]).empty());
  };
  // Not a clone file at all (the transport key file), a missing file.
  refused(hex(transport_) + "\n", 11, "not a clone file");
  std::filesystem::remove(clone_file_);
  auto result = import_keys(nodes_[1]);
  EXPECT_EQ(result.exit_code, 2) << result.err;
  // A wrapped key altered (its RFC 5649 integrity check fails).
  std::string text = good;
  const auto storage = text.find("key kms/storage ");
  ASSERT_NE(storage, std::string::npos);
  const auto digit = storage + std::string("key kms/storage ").size() + 7 + 10;
  text[digit] = text[digit] == '0' ? '1' : '0';
  refused(text, 11, "kms/storage");
  // A KCV altered: the key unwraps, but is not the key the file names.
  text = good;
  const auto kcv = storage + std::string("key kms/storage ").size();
  text[kcv] = text[kcv] == '0' ? '1' : '0';
  refused(text, 11, "KCV");
  // A key missing, another format.
  text = good.substr(0, good.find("key kms/transport"));
  refused(text, 11, "this one has 2 keys");
  text = good;
  text.replace(text.find("# format: 1"), 11, "# format: 9");
  refused(text, 11, "format 9");
}

TEST_P(CloneTest, AnInitialisedTokenIsReplacedOnlyWithForce) {
  ASSERT_EQ(export_keys(nodes_[0]).exit_code, 0);
  auto result = cli(nodes_[1], {"init"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Bytes kek = testkdf::random_bytes(32);
  const Bytes before = master_child_wrapped(nodes_[1], kek);
  result = import_keys(nodes_[1]);
  EXPECT_EQ(result.exit_code, 5) << result.err;
  EXPECT_TRUE(clitest::one_line(result.err)) << result.err;
  EXPECT_NE(result.err.find("--force"), std::string::npos) << result.err;
  EXPECT_EQ(master_child_wrapped(nodes_[1], kek), before);

  result = import_keys(nodes_[1], {"--force"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("replaced kms/master"), std::string::npos) << result.out;
  EXPECT_EQ(master_child_wrapped(nodes_[1], kek), master_child_wrapped(nodes_[0], kek));
  EXPECT_EQ(kcvs(nodes_[1]), kcvs(nodes_[0]));

  // The first token: export refuses an initialised token and an existing file, and leaves
  // no file behind.
  std::filesystem::remove(clone_file_);
  result = export_keys(nodes_[0]);
  EXPECT_EQ(result.exit_code, 5) << result.err;
  EXPECT_FALSE(std::filesystem::exists(clone_file_));
  clitest::write_file(clone_file_, "keep me\n");
  result = export_keys(nodes_[2]);
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(clitest::read_file(clone_file_), "keep me\n");
  EXPECT_TRUE(token_objects(nodes_[2]).empty());
}

TEST_P(CloneTest, ComponentsAreGeneratedWithTheirKcv) {
  const std::string path = dir_->path() + "/new-component";
  auto result = cli(nodes_[0], {"--json", "clone", "component", "--out", path});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string text = clitest::read_file(path);
  ASSERT_EQ(text.size(), 65u);
  EXPECT_EQ(boost::json::parse(result.out).at("kcv").as_string(),
            component_kcv(clitest::unhex(text.substr(0, 64))));
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::group_read,
            std::filesystem::perms::none);
  result = cli(nodes_[0], {"clone", "component", "--out", path});
  EXPECT_EQ(result.exit_code, 2) << result.err;  // never overwritten
}

INSTANTIATE_TEST_SUITE_P(Tokens, CloneTest, ::testing::Values(TokenKind::softhsm, TokenKind::nss),
                         clitest::kind_param_name);

}  // namespace
