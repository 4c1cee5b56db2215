#include "kms/server/content_type.h"

#include <boost/beast/core/string.hpp>
#include <cctype>

namespace kms::server {

namespace beast = boost::beast;

namespace {

bool is_tchar(char c) {  // RFC 9110 token characters
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// A token at the front of text (removed); empty if there is none.
std::string_view take_token(std::string_view& text) {
  std::size_t n = 0;
  while (n < text.size() && is_tchar(text[n])) ++n;
  const std::string_view token = text.substr(0, n);
  text.remove_prefix(n);
  return token;
}

}  // namespace

std::optional<std::string> json_content_type_problem(std::string_view value) {
  // RFC 9110 media-type: type "/" subtype *( OWS ";" OWS [ parameter ] ), parameter =
  // token "=" ( token / quoted-string ); names and the type are case-insensitive.
  std::string_view rest = trim_ows(value);
  const std::string_view type = take_token(rest);
  if (rest.empty() || rest.front() != '/') return "not a media type (must be application/json)";
  rest.remove_prefix(1);
  const std::string_view subtype = take_token(rest);
  if (!beast::iequals(type, "application") || !beast::iequals(subtype, "json")) {
    return "must be application/json";
  }
  while (true) {
    rest = trim_ows(rest);
    if (rest.empty()) return std::nullopt;
    if (rest.front() != ';') return "malformed media type parameters";
    rest.remove_prefix(1);
    rest = trim_ows(rest);
    if (rest.empty() || rest.front() == ';') continue;  // an empty parameter
    const std::string_view name = take_token(rest);
    if (name.empty() || rest.empty() || rest.front() != '=') {
      return "malformed media type parameter";
    }
    rest.remove_prefix(1);
    std::string parameter_value;
    if (!rest.empty() && rest.front() == '"') {
      std::size_t i = 1;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        parameter_value += rest[i];
      }
      if (i >= rest.size()) return "unterminated quoted parameter value";
      rest.remove_prefix(i + 1);
    } else {
      parameter_value = std::string(take_token(rest));
      if (parameter_value.empty()) return "malformed media type parameter";
    }
    // JSON is UTF-8 (RFC 8259 section 8.1): a body declared in any other charset is not
    // read as if it were UTF-8. Other parameters have no meaning for application/json.
    if (beast::iequals(name, "charset") && !beast::iequals(parameter_value, "utf-8")) {
      return "charset " + parameter_value.substr(0, 32) + " is not utf-8";
    }
  }
}

}  // namespace kms::server
