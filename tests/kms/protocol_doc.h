// Reads the test vectors out of docs/PROTOCOL.md, so the document itself is what is tested.
#pragma once

#include <string>

#include "reference_kms.h"

namespace kmstest {

std::string protocol_doc_path();  // <source>/docs/PROTOCOL.md
// The "name = hex" lines of the ```text block under "### Profile <id>".
NamedValues vectors_from_doc(int profile_id);

}  // namespace kmstest
