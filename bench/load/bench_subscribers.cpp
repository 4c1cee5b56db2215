// kms_bench_subscribers: the `kms-provision subscriber import --file` CSV for the bench
// subscribers 0 .. N-1 (identities and keys as kms-client load derives them from the seed),
// each key RFC 5649-wrapped under the transport key, so kmsd's key store holds exactly the
// keys the load generator uses. Both key files are read, never given on the command line.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <span>
#include <string>

#include "key_files.h"
#include "kms/hex.h"
#include "load_generator.h"

namespace {

kms::client::Secret read_hex_key(const std::string& path) {
  std::string text = kms::tools::read_text(path);
  text.erase(text.find_last_not_of(" \n\r\t") + 1);
  auto bytes = kms::from_hex(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!bytes || bytes->size() != 32) throw std::runtime_error(path + ": not 64 hex digits");
  kms::client::Secret key(*bytes);
  OPENSSL_cleanse(bytes->data(), bytes->size());
  return key;
}

// RFC 5649 (AES key wrap with padding), as docs/OPERATIONS.md describes for suppliers.
std::string wrap_hex(const kms::client::Secret& transport, const kms::client::Secret& key) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  unsigned char out[48];
  int length = 0, final_length = 0;
  EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  const bool ok =
      ctx != nullptr &&
      EVP_EncryptInit_ex(ctx, EVP_aes_256_wrap_pad(), nullptr, transport.data(), nullptr) == 1 &&
      EVP_EncryptUpdate(ctx, out, &length, key.data(), static_cast<int>(key.size())) == 1 &&
      EVP_EncryptFinal_ex(ctx, out + length, &final_length) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok || length + final_length != 40) throw std::runtime_error("RFC 5649 wrap failed");
  return kms::to_hex(std::span<const std::uint8_t>(out, 40));
}

}  // namespace

int main(int argc, char** argv) {
  std::string seed_file, transport_file, out_file;
  unsigned long long count = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << "usage: kms_bench_subscribers --seed-file F --transport-key-file F --count N "
                   "--out FILE.csv\n"
                   "Writes identity,wrapped_key lines for the bench subscribers 0 .. N-1\n"
                   "(kms-client load --subscriber-seed-file F --subscribers N uses the same).\n";
      return 0;
    }
    if (i + 1 >= argc) {
      std::cerr << "kms_bench_subscribers: " << arg << " needs a value (see --help)\n";
      return 2;
    }
    const std::string value = argv[++i];
    if (arg == "--seed-file")
      seed_file = value;
    else if (arg == "--transport-key-file")
      transport_file = value;
    else if (arg == "--out")
      out_file = value;
    else if (arg == "--count")
      count = std::stoull(value);
    else {
      std::cerr << "kms_bench_subscribers: unknown option " << arg << " (see --help)\n";
      return 2;
    }
  }
  if (seed_file.empty() || transport_file.empty() || out_file.empty() || count == 0) {
    std::cerr << "kms_bench_subscribers: --seed-file, --transport-key-file, --out and --count "
                 "are required (see --help)\n";
    return 2;
  }
  try {
    const kms::client::Secret seed = read_hex_key(seed_file);
    const kms::client::Secret transport = read_hex_key(transport_file);
    std::ofstream out(out_file, std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + out_file);
    out << "identity,wrapped_key\n";
    for (unsigned long long i = 0; i < count; ++i) {
      const std::string id = kms::tools::bench_subscriber_id(i);
      out << id << ',' << wrap_hex(transport, kms::tools::bench_subscriber_key(seed, id)) << '\n';
    }
    if (!out.flush()) throw std::runtime_error("cannot write " + out_file);
  } catch (const std::exception& error) {
    std::cerr << "kms_bench_subscribers: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
