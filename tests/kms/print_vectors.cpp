// Prints the test-vector section of docs/PROTOCOL.md from the software reference
// (kms_client primitives). The tests check the document against this and the token path.
#include <iostream>

#include "reference_kms.h"

int main() {
  using kms::client::Profile;
  for (Profile profile : {Profile::aes_ecb_sha256, Profile::sp800_108_cmac}) {
    std::cout << "### Profile " << static_cast<int>(profile) << " ("
              << (profile == Profile::aes_ecb_sha256 ? "aes-ecb-sha256" : "sp800-108-cmac")
              << ")\n\n```text\n";
    for (const auto& [name, value] : kmstest::compute_vectors(profile)) {
      std::cout << name << std::string(name.size() < 17 ? 17 - name.size() : 1, ' ') << "= "
                << kmstest::hex(value) << "\n";
    }
    std::cout << "```\n\n";
  }
}
