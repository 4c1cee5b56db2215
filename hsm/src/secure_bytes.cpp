#include "hsm/secure_bytes.h"

#include <openssl/crypto.h>

#include <utility>

namespace hsm {
namespace {
void wipe(std::vector<std::uint8_t>& bytes) noexcept {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}
}  // namespace

SecureBytes::SecureBytes(std::size_t size) : bytes_(size) {}
SecureBytes::SecureBytes(ByteView data) : bytes_(data.begin(), data.end()) {}
SecureBytes::SecureBytes(const SecureBytes& other) : bytes_(other.bytes_) {}

SecureBytes& SecureBytes::operator=(const SecureBytes& other) {
  if (this != &other) {
    clear();
    bytes_ = other.bytes_;
  }
  return *this;
}

SecureBytes::SecureBytes(SecureBytes&& other) noexcept : bytes_(std::move(other.bytes_)) {
  other.bytes_.clear();
}

SecureBytes& SecureBytes::operator=(SecureBytes&& other) noexcept {
  if (this != &other) {
    clear();
    bytes_ = std::move(other.bytes_);
    other.bytes_.clear();
  }
  return *this;
}

SecureBytes::~SecureBytes() { wipe(bytes_); }

void SecureBytes::resize(std::size_t size) {
  if (size < bytes_.size()) {
    OPENSSL_cleanse(bytes_.data() + size, bytes_.size() - size);
    bytes_.resize(size);
    return;
  }
  if (size > bytes_.capacity()) {
    // Growing would reallocate and leave the old copy unwiped: move by hand.
    std::vector<std::uint8_t> grown(size);
    std::copy(bytes_.begin(), bytes_.end(), grown.begin());
    wipe(bytes_);
    bytes_.swap(grown);
    return;
  }
  bytes_.resize(size);
}

void SecureBytes::clear() noexcept {
  wipe(bytes_);
  bytes_.clear();
}

SecureString::~SecureString() {
  if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
}

bool equal_constant_time(ByteView a, ByteView b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace hsm
