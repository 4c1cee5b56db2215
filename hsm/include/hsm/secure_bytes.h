// Byte buffers that are wiped (OPENSSL_cleanse) when they die: nonces, PINs, plaintext
// that came out of C_Decrypt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hsm {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(std::size_t size);
  explicit SecureBytes(ByteView data);
  SecureBytes(const SecureBytes&);
  SecureBytes& operator=(const SecureBytes&);
  SecureBytes(SecureBytes&&) noexcept;
  SecureBytes& operator=(SecureBytes&&) noexcept;
  ~SecureBytes();

  std::uint8_t* data() noexcept { return bytes_.data(); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::size_t size() const noexcept { return bytes_.size(); }
  bool empty() const noexcept { return bytes_.empty(); }
  void resize(std::size_t size);  // wipes what a shrink drops
  void clear() noexcept;          // wipes, then empties
  ByteView view() const noexcept { return {bytes_.data(), bytes_.size()}; }
  std::uint8_t& operator[](std::size_t i) { return bytes_[i]; }
  std::uint8_t operator[](std::size_t i) const { return bytes_[i]; }

 private:
  std::vector<std::uint8_t> bytes_;
};

// A PIN or passphrase: wiped on destruction.
class SecureString {
 public:
  SecureString() = default;
  explicit SecureString(std::string value) : value_(std::move(value)) {}
  SecureString(const SecureString&) = default;
  SecureString& operator=(const SecureString&) = default;
  SecureString(SecureString&&) noexcept = default;
  SecureString& operator=(SecureString&&) noexcept = default;
  ~SecureString();
  const std::string& value() const noexcept { return value_; }
  bool empty() const noexcept { return value_.empty(); }

 private:
  std::string value_;
};

// Constant-time comparison.
bool equal_constant_time(ByteView a, ByteView b) noexcept;

}  // namespace hsm
