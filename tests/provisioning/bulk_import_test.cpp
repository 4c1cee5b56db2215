// kms-provision's bulk import chunk by chunk, on real tokens and SQLite, in both key store
// modes: bad lines at chunk boundaries and in either worker's share are reported with their
// line numbers and nothing else is lost; a failure that is not a line's own stops the
// import with the committed chunks imported and the current one not at all; --skip-existing
// then imports the rest.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <sstream>

#include "cli_fixture.h"
#include "storage/sqlite.h"
#include "tokens/key_store.h"

namespace {

using clitest::Bytes;
using clitest::hex;
using tokens::IdentityKind;

class BulkImportTest : public clitest::CliTest {
 protected:
  // A fresh database for each key store mode (the token is shared: wrapped mode leaves no
  // subscriber objects in it).
  std::vector<std::string> use_mode(tokens::KeyStoreMode mode) {
    database_ = dir_->path() + "/kms-" + std::string(tokens::key_store_mode_name(mode)) + ".db";
    return {"--key-store", std::string(tokens::key_store_mode_name(mode))};
  }

  testsupport::CommandResult import(const std::vector<std::string>& mode_args,
                                    const std::string& file, std::vector<std::string> extra) {
    std::vector<std::string> args = mode_args;
    args.insert(args.end(), {"subscriber", "import", "--file", file, "--batch-size", "3"});
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }

  // The line numbers named in `err` as "FILE: line N: ", in order.
  static std::vector<int> reported_lines(const std::string& err) {
    std::vector<int> lines;
    for (std::size_t at = err.find(": line "); at != std::string::npos;
         at = err.find(": line ", at + 1)) {
      lines.push_back(std::stoi(err.substr(at + 7)));
    }
    return lines;
  }

  std::size_t subscriber_objects() const {
    std::size_t count = 0;
    for (const auto& label : token_objects()) count += label.starts_with("kms/subscriber/");
    return count;
  }
};

// Batches of 3 entries: lines 2-4, 5-7, 8-10, 11-12 (line 1 is the header). Two workers
// share each chunk (entries 0, 2, ... and 1, 3, ...).
TEST_P(BulkImportTest, BadLinesAtChunkBoundariesAreReportedAndTheRestImported) {
  init();
  for (const auto mode : {tokens::KeyStoreMode::wrapped, tokens::KeyStoreMode::token}) {
    SCOPED_TRACE(tokens::key_store_mode_name(mode));
    const std::vector<std::string> mode_args = use_mode(mode);
    const std::string prefix = mode == tokens::KeyStoreMode::wrapped ? "w" : "t";
    const auto id = [&](int i) { return "sip:" + prefix + std::to_string(i) + "@ims.example.net"; };
    const Bytes other_kek = testkdf::random_bytes(32);
    std::vector<Bytes> keys;
    for (int i = 0; i < 12; ++i) keys.push_back(testkdf::random_bytes(32));
    const auto line = [&](int i, const Bytes& kek) {
      return id(i) + "," + hex(testkdf::wrap_pad(kek, keys[static_cast<std::size_t>(i)])) + "\n";
    };
    std::string csv = "identity,wrapped_key\n";  // line 1
    csv += line(2, transport_);                  // 2: chunk 1
    csv += line(3, transport_);                  // 3
    csv += line(4, other_kek);                   // 4: last of chunk 1, worker 0: no unwrap
    csv += "not-an-identity," + random_wrapped_hex() + "\n";  // 5: first of chunk 2
    csv += line(6, transport_);                               // 6
    csv += line(7, other_kek);                            // 7: last of chunk 2, worker 1: no unwrap
    csv += id(3) + "," + random_wrapped_hex() + "\n";     // 8: repeats line 3 (an earlier chunk)
    csv += line(9, transport_);                           // 9
    csv += id(9) + "," + random_wrapped_hex() + "\n";     // 10: repeats line 9 (the same chunk)
    csv += line(11, transport_);                          // 11: last chunk
    csv += id(12) + "," + random_wrapped_hex(16) + "\n";  // 12: last line: a 16-byte key
    const std::string file = dir_->path() + "/keys-" + prefix + ".csv";
    clitest::write_file(file, csv);

    auto result = import(mode_args, file, {});
    EXPECT_EQ(result.exit_code, 12) << result.err;
    EXPECT_EQ(reported_lines(result.err), (std::vector<int>{4, 5, 7, 8, 10, 12})) << result.err;
    EXPECT_NE(result.out.find("imported 5 subscribers, 6 failed"), std::string::npos) << result.out;
    tokens::KeyDatabase db(database_);
    EXPECT_EQ(db.count(IdentityKind::subscriber), 5u);
    for (int i : {2, 3, 6, 9, 11}) {  // line 9's key, not line 10's: the first one wins
      EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, id(i), keys[std::size_t(i)])) << i;
    }
    for (int i : {4, 7, 12}) EXPECT_FALSE(db.find(IdentityKind::subscriber, id(i))) << i;
    // Token mode: one token object per imported subscriber, none for the failed lines
    // (line 10's was created and destroyed when its insert failed).
    EXPECT_EQ(subscriber_objects(), mode == tokens::KeyStoreMode::token ? 5u : 0u);

    // The same file again with --skip-existing: the imported ones (and their repeats) are
    // skipped, the bad lines fail again, nothing changes.
    result = import(mode_args, file, {"--skip-existing"});
    EXPECT_EQ(result.exit_code, 12) << result.err;
    EXPECT_EQ(reported_lines(result.err), (std::vector<int>{4, 5, 7, 12})) << result.err;
    EXPECT_NE(result.out.find("imported 0 subscribers, 4 failed, 7 already present (skipped)"),
              std::string::npos)
        << result.out;
    EXPECT_EQ(db.count(IdentityKind::subscriber), 5u);
    EXPECT_EQ(subscriber_objects(), mode == tokens::KeyStoreMode::token ? 5u : 0u);
  }
}

// A database failure in the second chunk (a trigger refuses line 6's insert, after line 5's
// in the same transaction): chunk 1 stays imported, chunk 2 is not imported at all (line 5
// included; in token mode its token objects are destroyed), the import stops with the
// database's exit code and says how far it got. Without the trigger, --skip-existing
// imports the rest.
TEST_P(BulkImportTest, AFailureStopsAfterTheCommittedChunksAndSkipExistingResumes) {
  init();
  for (const auto mode : {tokens::KeyStoreMode::wrapped, tokens::KeyStoreMode::token}) {
    SCOPED_TRACE(tokens::key_store_mode_name(mode));
    const std::vector<std::string> mode_args = use_mode(mode);
    const std::string prefix = mode == tokens::KeyStoreMode::wrapped ? "rw" : "rt";
    const auto id = [&](int i) { return "sip:" + prefix + std::to_string(i) + "@ims.example.net"; };
    std::vector<Bytes> keys;
    std::string csv = "identity,wrapped_key\n";
    for (int i = 0; i < 10; ++i) {
      keys.push_back(testkdf::random_bytes(32));
      if (i >= 2) csv += id(i) + "," + hex(testkdf::wrap_pad(transport_, keys.back())) + "\n";
    }
    const std::string file = dir_->path() + "/resume-" + prefix + ".csv";
    clitest::write_file(file, csv);  // lines 2..9: chunks 2-4, 5-7, 8-9

    { tokens::KeyDatabase create(database_); }  // the schema, then the fault
    {
      storage::sqlite::Connection connection(database_);
      connection.exec(("CREATE TRIGGER refuse BEFORE INSERT ON kms_identities WHEN "
                       "NEW.identity = '" +
                       id(6) +
                       "' BEGIN SELECT RAISE(ABORT, 'refused by "
                       "the test'); END")
                          .c_str());
    }
    auto result = import(mode_args, file, {});
    EXPECT_EQ(result.exit_code, 13) << result.err;  // database error
    EXPECT_NE(result.err.find("stopped: 3 subscribers imported; every line up to 4 is done"),
              std::string::npos)
        << result.err;
    EXPECT_NE(result.err.find("refused by the test"), std::string::npos) << result.err;
    {
      tokens::KeyDatabase db(database_);
      EXPECT_EQ(db.count(IdentityKind::subscriber), 3u);
      for (int i = 2; i <= 4; ++i) EXPECT_TRUE(db.find(IdentityKind::subscriber, id(i))) << i;
      EXPECT_FALSE(db.find(IdentityKind::subscriber, id(5)));  // inserted, rolled back
    }
    EXPECT_EQ(subscriber_objects(), mode == tokens::KeyStoreMode::token ? 3u : 0u);

    {
      storage::sqlite::Connection connection(database_);
      connection.exec("DROP TRIGGER refuse");
    }
    result = import(mode_args, file, {"--skip-existing"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_NE(result.out.find("imported 5 subscribers, 0 failed, 3 already present (skipped)"),
              std::string::npos)
        << result.out;
    for (int i = 2; i <= 9; ++i) {
      EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, id(i), keys[std::size_t(i)])) << i;
    }
    EXPECT_EQ(subscriber_objects(), mode == tokens::KeyStoreMode::token ? 8u : 0u);
  }
}

// SoftHSM runs one instance's operations on a token object nearly one at a time (the quirk
// serialises_token_object_use): the second worker of a wrapped-mode import runs on an
// instance of the library of its own, and the keys it stored are the right ones. One
// instance elsewhere, and in token mode (one worker).
TEST_P(BulkImportTest, TheSecondWorkerHasAnInstanceOfItsOwnWhereTheTokenSerialisesOne) {
  init();
  const bool softhsm = GetParam() == testsupport::TokenKind::softhsm;
  for (const auto mode : {tokens::KeyStoreMode::wrapped, tokens::KeyStoreMode::token}) {
    SCOPED_TRACE(tokens::key_store_mode_name(mode));
    std::vector<std::string> args = use_mode(mode);
    const std::string prefix = mode == tokens::KeyStoreMode::wrapped ? "w" : "t";
    std::vector<Bytes> keys;
    std::string csv = "identity,wrapped_key\n";
    for (int i = 0; i < 8; ++i) {
      keys.push_back(testkdf::random_bytes(32));
      csv += "sip:" + prefix + "lane" + std::to_string(i) + "@ims.example.net," +
             hex(testkdf::wrap_pad(transport_, keys.back())) + "\n";
    }
    const std::string file = dir_->path() + "/lanes-" + prefix + ".csv";
    clitest::write_file(file, csv);
    args.insert(args.begin(), "--json");
    args.insert(args.end(), {"subscriber", "import", "--file", file, "--batch-size", "4"});
    const auto result = cli(args);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(result.err, "");  // no fallback warning: the separate instance opened
    const boost::json::object out = boost::json::parse(result.out).as_object();
    EXPECT_EQ(out.at("imported").to_number<int>(), 8);
    const int expected = softhsm && mode == tokens::KeyStoreMode::wrapped ? 2 : 1;
    EXPECT_EQ(out.at("token_instances").to_number<int>(), expected) << result.out;
    for (int i = 0; i < 8; ++i) {  // both workers' shares (entries 0, 2, ... and 1, 3, ...)
      EXPECT_TRUE(stored_key_holds(
          IdentityKind::subscriber,
          "sip:" + prefix + "lane" + std::to_string(i) + "@ims.example.net", keys[std::size_t(i)]))
          << i;
    }
  }
}

// Wrapped mode checks chunk k + 1 while chunk k is still in the token and not committed
// (provisioner_bulk.cpp: the pipeline). A line that repeats an identity of the chunk just
// before is decided at its insert, once that chunk is in: as an import chunk by chunk would
// decide it. Batches of 3: lines 2-4, 5-7, 8.
TEST_P(BulkImportTest, ARepeatOfTheChunkJustBeforeIsDecidedOnceThatChunkIsCommitted) {
  init();
  for (const auto mode : {tokens::KeyStoreMode::wrapped, tokens::KeyStoreMode::token}) {
    // Without --skip-existing the repeats fail; with it (from the start) they are skipped.
    for (const bool skip_existing : {false, true}) {
      SCOPED_TRACE(std::string(tokens::key_store_mode_name(mode)) +
                   (skip_existing ? " --skip-existing" : ""));
      const std::string prefix = std::string(mode == tokens::KeyStoreMode::wrapped ? "rw" : "rt") +
                                 (skip_existing ? "s" : "");
      const auto id = [&](int i) {
        return "sip:" + prefix + std::to_string(i) + "@ims.example.net";
      };
      const Bytes other_kek = testkdf::random_bytes(32);
      std::vector<Bytes> keys;
      for (int i = 0; i < 9; ++i) keys.push_back(testkdf::random_bytes(32));
      const auto line = [&](int who, int key, const Bytes& kek) {
        return id(who) + "," + hex(testkdf::wrap_pad(kek, keys[static_cast<std::size_t>(key)])) +
               "\n";
      };
      std::string csv = "identity,wrapped_key\n";  // line 1
      csv += line(1, 2, transport_);               // 2: chunk 1
      csv += line(2, 3, other_kek);                // 3: does not unwrap (the token phase)
      csv += line(3, 4, transport_);               // 4
      csv += line(1, 5, transport_);  // 5: chunk 2, repeats line 2 (imported): already exists
      csv += line(2, 6, transport_);  // 6: repeats line 3 (failed): imported
      csv += line(4, 7, transport_);  // 7
      csv += line(4, 8, transport_);  // 8: chunk 3, repeats line 7 (imported): already exists
      const std::string file = dir_->path() + "/repeats-" + prefix + ".csv";
      clitest::write_file(file, csv);

      const std::size_t objects_before = subscriber_objects();
      const std::vector<std::string> mode_args = use_mode(mode);
      database_ += "." + prefix;  // a fresh database for each run
      const auto result = import(
          mode_args, file,
          skip_existing ? std::vector<std::string>{"--skip-existing"} : std::vector<std::string>{});
      EXPECT_EQ(result.exit_code, 12) << result.err;
      if (skip_existing) {
        EXPECT_EQ(reported_lines(result.err), (std::vector<int>{3})) << result.err;
        EXPECT_NE(result.out.find("imported 4 subscribers, 1 failed, 2 already present (skipped)"),
                  std::string::npos)
            << result.out;
      } else {
        EXPECT_EQ(reported_lines(result.err), (std::vector<int>{3, 5, 8})) << result.err;
        EXPECT_NE(result.err.find("line 5: subscriber " + id(1) + " already exists"),
                  std::string::npos)
            << result.err;
        EXPECT_NE(result.out.find("imported 4 subscribers, 3 failed"), std::string::npos)
            << result.out;
      }
      tokens::KeyDatabase db(database_);
      EXPECT_EQ(db.count(IdentityKind::subscriber), 4u);
      const std::pair<int, int> kept[] = {{1, 2}, {2, 6}, {3, 4}, {4, 7}};  // the first to import
      for (const auto& [who, key] : kept) {
        EXPECT_TRUE(stored_key_holds(IdentityKind::subscriber, id(who), keys[std::size_t(key)]))
            << who;
      }
      // Token mode: one object per imported subscriber, none left by the repeats.
      EXPECT_EQ(subscriber_objects() - objects_before,
                mode == tokens::KeyStoreMode::token ? 4u : 0u);
    }
  }
}

// The token calls of a bulk import, recorded by the fault module in front of the real token
// (KMS_PKCS11_RECORD): per line exactly one unwrap, one length read, one wrap and one
// destroy; the KMS keys are found a fixed number of times whatever the number of lines (no
// C_FindObjects and no login per line), and the same is true of their copies.
TEST_P(BulkImportTest, EachLineCostsFourTokenCallsAndNoSearch) {
  init();
  std::map<std::string, int> calls[2];
  const int lines[2] = {4, 24};
  for (int run = 0; run < 2; ++run) {
    std::string csv = "identity,wrapped_key\n";
    for (int i = 0; i < lines[run]; ++i) {
      csv += "sip:calls" + std::to_string(run) + "-" + std::to_string(i) + "@ims.example.net," +
             random_wrapped_hex() + "\n";
    }
    const std::string file = dir_->path() + "/calls" + std::to_string(run) + ".csv";
    const std::string record = dir_->path() + "/calls" + std::to_string(run) + ".txt";
    clitest::write_file(file, csv);
    std::vector<std::string> argv = base_args();
    argv[std::size_t(std::find(argv.begin(), argv.end(), "--module") - argv.begin()) + 1] =
        KMS_FAULT_MODULE_PATH;
    argv.insert(argv.end(), {"subscriber", "import", "--file", file, "--batch-size", "5"});
    std::map<std::string, std::string> environment = token_->environment();
    environment["KMS_FAULT_TARGET"] = token_->module_path();
    environment["KMS_PKCS11_RECORD"] = record;
    const auto result = testsupport::run_command(argv, environment);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    std::istringstream in(clitest::read_file(record));
    for (std::string line; std::getline(in, line);) {
      if (line.ends_with(" rv=0x0")) ++calls[run][line.substr(0, line.find(' '))];
    }
  }
  for (const char* function :
       {"C_UnwrapKey", "C_GetAttributeValue", "C_WrapKey", "C_DestroyObject"}) {
    EXPECT_EQ(calls[1][function] - calls[0][function], lines[1] - lines[0]) << function;
  }
  for (const char* function : {"C_FindObjectsInit", "C_FindObjects", "C_Login", "C_CopyObject"}) {
    EXPECT_EQ(calls[1][function], calls[0][function]) << function;
  }
  EXPECT_GT(calls[0]["C_FindObjectsInit"], 0);  // the record is what it seems
  EXPECT_EQ(calls[0]["C_UnwrapKey"], lines[0]);
}

INSTANTIATE_TEST_SUITE_P(Tokens, BulkImportTest,
                         ::testing::Values(testsupport::TokenKind::softhsm,
                                           testsupport::TokenKind::nss),
                         clitest::kind_param_name);

}  // namespace
