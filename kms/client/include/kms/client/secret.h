// Bytes that are wiped (OPENSSL_cleanse) when they die: keys and nonces on the UE side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace kms::client {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::size_t size);
  explicit Secret(ByteView data);
  Secret(const Secret& other);
  Secret& operator=(const Secret& other);
  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  std::uint8_t* data() noexcept { return bytes_.data(); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::size_t size() const noexcept { return bytes_.size(); }
  bool empty() const noexcept { return bytes_.empty(); }
  ByteView view() const noexcept { return {bytes_.data(), bytes_.size()}; }
  operator ByteView() const noexcept { return view(); }  // NOLINT: read access only
  std::uint8_t operator[](std::size_t i) const { return bytes_[i]; }
  void clear() noexcept;  // wipes, then empties

 private:
  std::vector<std::uint8_t> bytes_;
};

// Constant-time equality (lengths are not secret).
bool equal_constant_time(ByteView a, ByteView b) noexcept;

}  // namespace kms::client
