// The key cloning ceremony: the same M, storage and transport key in N tokens, with no
// plaintext copy outside a token afterwards (docs/OPERATIONS.md "Cloning the KMS keys").
// The cloning key K_C is the XOR of key components held by separate custodians; it exists
// in a token only as a session object, for the one command. `export` makes the KMS keys in
// the first token and the clone file (the keys wrapped under K_C); `import` installs them
// from the clone file in every other token. Both install the keys the same way (C_UnwrapKey
// under K_C with the KMS templates: not extractable, fixed), after checking every KCV on
// session copies, so a failure leaves the token as it was.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hsm/secure_bytes.h"
#include "tokens/token_context.h"

namespace provisioning {

struct KeyCheckValue {
  std::string label;
  std::string kcv;      // hex
  std::string problem;  // why the token could not compute it (kcv empty)
};

struct CloneResult {
  std::string cloning_key_kcv;              // hex
  std::vector<std::string> component_kcvs;  // hex, in the order given
  std::vector<KeyCheckValue> keys;          // the KMS keys now in the token
  std::vector<std::string> replaced;        // labels (--force)
  std::string note;                         // e.g. no check blob stored (NSS)
};

struct CloneExportOptions {
  std::vector<std::string> component_files;
  std::optional<std::string> transport_key_file;  // else the transport key is generated
  std::string out_path;
  bool force = false;
};

struct CloneImportOptions {
  std::string clone_file;
  std::vector<std::string> component_files;
  bool force = false;
};

// Generates a new key component (32 random bytes, 64 hex digits) into a new file (0600);
// returns its KCV (hex).
std::string new_key_component(const std::string& out_path);

CloneResult clone_export(tokens::TokenContext& token, const CloneExportOptions& options);
CloneResult clone_import(tokens::TokenContext& token, const CloneImportOptions& options);

// The KCVs of the KMS keys in the token (kcv "" where there is none: a missing key, a
// transport key without a check blob, or a token failure, named in `problem`).
std::vector<KeyCheckValue> kms_key_check_values(tokens::TokenContext& token);

}  // namespace provisioning
