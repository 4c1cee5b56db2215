// A software model of the KMS's computations for the test vectors, built on kms_client's
// primitives (not on kms_core): what the token must produce, byte for byte.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kms/client/protocol.h"
#include "vector_inputs.h"

namespace kmstest {

using NamedValues = std::vector<std::pair<std::string, Bytes>>;

// Every named value of the vector set for one profile, in document order.
NamedValues compute_vectors(kms::client::Profile profile, const VectorInputs& in = {});

// Looks a value up by name; throws std::out_of_range.
const Bytes& value_of(const NamedValues& values, const std::string& name);

std::string hex(kms::client::ByteView bytes);
Bytes from_hex(const std::string& text);

}  // namespace kmstest
