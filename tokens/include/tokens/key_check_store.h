// The key check values (KCVs, tokens/key_check_value.h) of the KMS keys that every node's
// token must hold, kept in the shared database (table kms_key_check_values, key database
// schema version 2), each with where it came from: when, by which node or host, by which
// command, from which token. kms-provision records them when it makes or replaces the keys;
// kmsd compares its token with them at start (tokens/key_check.h). Public values only: a
// KCV says which key a token holds, never anything of the key.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tokens {

struct RecordedKeyCheck {
  std::string label;             // kms/master, kms/storage, kms/transport
  std::string kcv;               // lower-case hex
  std::string profile;           // the token profile it was computed under
  std::int64_t recorded_at = 0;  // Unix seconds
  std::string recorded_by;       // kmsd's node name, or kms-provision's host name
  std::string command;           // "kmsd start", "kms-provision init --force", ...
  std::string token;             // the token's label
};

// "kms/storage 1a2b3c (profile aes-ecb-sha256, recorded 2026-12-01T15:00:00Z by
// kms-provision init on host1, token kms-node1)": for messages.
std::string describe(const RecordedKeyCheck& recorded);

// Opens its own connection (SQLite file or one PostgreSQL connection) for the few
// statements of a start or a command, and creates or upgrades the key database schema as
// KeyDatabase does. Not thread-safe. Throws DatabaseError / DatabaseUnavailableError
// (tokens/key_database.h), as KeyDatabase does.
class KeyCheckStore {
 public:
  explicit KeyCheckStore(const std::string& database);
  ~KeyCheckStore();
  KeyCheckStore(const KeyCheckStore&) = delete;
  KeyCheckStore& operator=(const KeyCheckStore&) = delete;

  std::vector<RecordedKeyCheck> list();  // ordered by label
  std::optional<RecordedKeyCheck> find(const std::string& label);
  // Records `check` unless a value is recorded for its label. Returns what is recorded
  // afterwards: `check` itself (inserted), or the value another node or command recorded
  // first (nodes starting together race here; the database decides, the loser compares).
  struct Recorded {
    RecordedKeyCheck value;
    bool inserted = false;
  };
  Recorded record_if_absent(const RecordedKeyCheck& check);
  // Records `check` in place of its label's value (the keys were made or replaced). An
  // equal KCV is left as recorded, with its origin. Returns the value recorded before, if
  // any (equal or not).
  std::optional<RecordedKeyCheck> replace(const RecordedKeyCheck& check);
  // Removes the label's value (a replaced key that has no KCV). Returns the value removed.
  std::optional<RecordedKeyCheck> erase(const std::string& label);

  class Backend;  // SQLite or PostgreSQL (key_check_store.cpp)

 private:
  std::unique_ptr<Backend> backend_;
};

}  // namespace tokens
