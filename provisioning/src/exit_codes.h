// kms-provision's exit codes (documented in docs/OPERATIONS.md, "Exit codes"). Every
// failure prints one line on stderr and leaves the token and the database as they were.
// The one place that maps failures to codes is exit_code_of_current_exception().
#pragma once

namespace provisioning {

enum ExitCode : int {
  kOk = 0,
  kInternalError = 1,     // unexpected failure (a bug, or an unclassified token error)
  kUsage = 2,             // bad command line (unknown option, missing argument, file exists)
  kConfigError = 3,       // configuration file or value, no PIN source, unreadable PIN
  kInvalidIdentity = 4,   // not a sip:/sips:/tel: IMS public identity
  kAlreadyExists = 5,     // duplicate identity or personalisation key
  kNotFound = 6,          // unknown identity or personalisation key
  kTokenNotFound = 7,     // module cannot be loaded, or no token matches the URI
  kLoginFailed = 8,       // wrong PIN, PIN locked
  kMissingMechanism = 9,  // the token lacks a mechanism the KMS needs
  kNotInitialised = 10,   // the KMS keys are not in the token (run init)
  kBadKeyMaterial = 11,   // wrapped key malformed, fails to unwrap, or not AES-256
  kPartialImport = 12,    // bulk import: some lines failed, the valid ones were imported
  kDatabaseError = 13,    // the database cannot be opened or written
  kTokenError = 14,       // any other PKCS#11 failure
  kKeyMismatch = 15,      // the token's key check values differ from the database's
};

// Call inside a catch block: the exit code of the exception being handled.
ExitCode exit_code_of_current_exception() noexcept;

}  // namespace provisioning
