#include "kms/core/base64url.h"

namespace kms {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

[[noreturn]] void bad(std::string_view field, const std::string& why) {
  throw ProtocolError(ErrorCode::malformed_request,
                      "field '" + std::string(field) + "' is not base64url: " + why);
}

}  // namespace

std::string base64url_encode(std::span<const std::uint8_t> data) {
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::uint8_t byte : data) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(buffer >> bits) & 63];
    }
    buffer &= (1u << bits) - 1;
  }
  if (bits > 0) out += kAlphabet[(buffer << (6 - bits)) & 63];
  return out;
}

Bytes base64url_decode(std::string_view text, std::string_view field, std::size_t max_decoded) {
  if (text.size() % 4 == 1) bad(field, "impossible length");
  if (text.size() / 4 * 3 + (text.size() % 4 == 0 ? 0 : text.size() % 4 - 1) > max_decoded) {
    bad(field, "longer than " + std::to_string(max_decoded) + " bytes");
  }
  Bytes out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int value = sextet(text[i]);
    if (value < 0) {
      bad(field, text[i] == '=' ? "padding is not allowed"
                                : "invalid character at offset " + std::to_string(i));
    }
    buffer = (buffer << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>(buffer >> bits));
      buffer &= (1u << bits) - 1;
    }
  }
  if (buffer != 0) bad(field, "non-canonical final character");
  return out;
}

}  // namespace kms
