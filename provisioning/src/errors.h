// What can go wrong in kms-provision's operations, by kind. The library throws these (and
// the tokens/ and hsm/ errors); only the command line's edge (exit_codes.cpp) turns a kind
// into an exit code. what() is the one-line message.
#pragma once

#include <stdexcept>
#include <string>

namespace provisioning {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The command line asks for something the operation cannot do (a bad name, a missing
// option, options that exclude each other).
class UsageError : public Error {
 public:
  using Error::Error;
};

// An input file that cannot be read or parsed at all, an output file that exists or cannot
// be written.
class FileError : public Error {
 public:
  using Error::Error;
};

// Not a sip:/sips:/tel: IMS public identity.
class InvalidIdentityError : public Error {
 public:
  using Error::Error;
};

// The identity, personalisation key or token object is already there (or a KMS key is
// there with attributes init does not accept).
class AlreadyExistsError : public Error {
 public:
  using Error::Error;
};

// The identity or personalisation key is unknown.
class NotFoundError : public Error {
 public:
  using Error::Error;
};

// A wrapped key or key file that is malformed, does not unwrap, or is not AES-256.
class BadKeyMaterialError : public Error {
 public:
  using Error::Error;
};

// The token's objects are not as the KMS leaves them (e.g. two keys with one label).
class TokenStateError : public Error {
 public:
  using Error::Error;
};

}  // namespace provisioning
