#include "tokens/identity.h"

#include <cctype>
#include <string_view>

namespace tokens {
namespace {

constexpr std::size_t kMaxIdentityBytes = 256;

bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// RFC 3261 user: unreserved / escaped / user-unreserved.
std::optional<std::string> user_error(std::string_view user) {
  if (user.empty()) return "the user part before '@' is empty";
  for (std::size_t i = 0; i < user.size(); ++i) {
    const char c = user[i];
    if (is_alnum(c)) continue;
    if (std::string_view("-_.!~*'()&=+$,;?/").find(c) != std::string_view::npos) continue;
    if (c == '%' && i + 2 < user.size() && is_hex(user[i + 1]) && is_hex(user[i + 2])) {
      i += 2;
      continue;
    }
    return std::string("character '") + c + "' is not allowed in the user part";
  }
  return std::nullopt;
}

bool is_ipv4(std::string_view host) {
  int parts = 0;
  std::size_t start = 0;
  while (start <= host.size()) {
    std::size_t end = host.find('.', start);
    if (end == std::string_view::npos) end = host.size();
    const std::string_view part = host.substr(start, end - start);
    if (part.empty() || part.size() > 3) return false;
    int value = 0;
    for (char c : part) {
      if (!is_digit(c)) return false;
      value = value * 10 + (c - '0');
    }
    if (value > 255 || (part.size() > 1 && part[0] == '0')) return false;
    ++parts;
    start = end + 1;
    if (end == host.size()) break;
  }
  return parts == 4;
}

bool is_ipv6_reference(std::string_view host) {
  if (host.size() < 4 || host.front() != '[' || host.back() != ']') return false;
  const std::string_view inner = host.substr(1, host.size() - 2);
  int colons = 0;
  for (char c : inner) {
    if (c == ':') {
      ++colons;
    } else if (!is_hex(c) && c != '.') {
      return false;
    }
  }
  return colons >= 2 && colons <= 7 && inner.find(":::") == std::string_view::npos;
}

// RFC 3261 hostname: labels of alphanumerics and '-', not starting or ending with '-',
// top label starting with a letter.
std::optional<std::string> host_error(std::string_view host) {
  if (host.empty()) return "the host part after '@' is empty";
  if (host.front() == '[') {
    if (is_ipv6_reference(host)) return std::nullopt;
    return "malformed IPv6 reference";
  }
  if (is_ipv4(host)) return std::nullopt;
  if (host.size() > 253) return "host name too long";
  // No trailing dot: "example.net." and "example.net" would be two spellings of one host.
  std::string_view rest = host;
  std::string_view last_label;
  while (true) {
    const std::size_t dot = rest.find('.');
    const std::string_view label = rest.substr(0, dot);
    if (label.empty() || label.size() > 63) return "malformed host name";
    if (label.front() == '-' || label.back() == '-') return "malformed host name";
    for (char c : label) {
      if (c == ':') return "a port is not allowed";
      if (!is_alnum(c) && c != '-') {
        return std::string("character '") + c + "' is not allowed in the host name";
      }
    }
    last_label = label;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  if (is_digit(last_label.front())) return "malformed host name";
  for (char c : host) {
    if (std::isupper(static_cast<unsigned char>(c))) return "the host name must be lower case";
  }
  return std::nullopt;
}

std::optional<std::string> sip_error(std::string_view rest) {
  const std::size_t at = rest.rfind('@');
  if (at == std::string_view::npos) return "a SIP identity must be user@host";
  if (rest.find('@') != at) return "more than one '@'";
  if (rest.find('>') != std::string_view::npos || rest.find('<') != std::string_view::npos) {
    return "angle brackets are not allowed";
  }
  const std::string_view host = rest.substr(at + 1);
  if (host.find(';') != std::string_view::npos) return "URI parameters are not allowed";
  if (host.find('?') != std::string_view::npos) return "URI headers are not allowed";
  if (auto error = user_error(rest.substr(0, at))) return error;
  return host_error(host);
}

std::optional<std::string> tel_error(std::string_view rest) {
  if (rest.empty() || rest.front() != '+') {
    return "a tel identity must be a global number starting with '+'";
  }
  if (rest.find(';') != std::string_view::npos) return "tel URI parameters are not allowed";
  int digits = 0;
  for (char c : rest.substr(1)) {
    if (is_digit(c)) {
      ++digits;
    } else if (std::string_view("-.()").find(c) == std::string_view::npos) {
      return std::string("character '") + c + "' is not allowed in a tel number";
    }
  }
  if (digits == 0) return "a tel number needs at least one digit";
  if (digits > 15) return "a tel number has at most 15 digits (E.164)";
  return std::nullopt;
}

}  // namespace

std::string_view kind_name(IdentityKind kind) {
  return kind == IdentityKind::bridge ? "bridge" : "subscriber";
}

std::optional<IdentityKind> parse_kind(std::string_view name) {
  if (name == "subscriber") return IdentityKind::subscriber;
  if (name == "bridge") return IdentityKind::bridge;
  return std::nullopt;
}

std::optional<std::string> ims_identity_error(std::string_view identity) {
  if (identity.empty()) return "empty identity";
  if (identity.size() > kMaxIdentityBytes) return "longer than 256 bytes";
  for (char c : identity) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return "whitespace, control or non-ASCII character";
  }
  if (identity.starts_with("sip:")) return sip_error(identity.substr(4));
  if (identity.starts_with("sips:")) return sip_error(identity.substr(5));
  if (identity.starts_with("tel:")) return tel_error(identity.substr(4));
  return "not a sip:, sips: or tel: URI (scheme in lower case)";
}

}  // namespace tokens
