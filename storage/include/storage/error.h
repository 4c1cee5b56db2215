// The one error type of the storage layer: what went wrong (kind), and a message naming the
// database (never a password) and the failing operation.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace storage {

enum class ErrorKind {
  invalid_url,  // the [database] url can't be used (syntax, password in it, unknown scheme)
  unavailable,  // the server can't be reached, refused the login, or went away mid-request
  busy,         // another writer held the database past the timeout (SQLite)
  conflict,     // a concurrent transaction won (serialization failure, deadlock): try again
  duplicate,    // a unique key already exists
  schema,       // the schema is missing, older or newer than this build
  other,
};

std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }
  // Worth retrying later or elsewhere: the database is down, busy, or a race was lost.
  bool transient() const noexcept {
    return kind_ == ErrorKind::unavailable || kind_ == ErrorKind::busy ||
           kind_ == ErrorKind::conflict;
  }

 private:
  ErrorKind kind_;
};

}  // namespace storage
