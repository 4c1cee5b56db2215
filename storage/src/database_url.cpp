#include "storage/database_url.h"

#include <cstdlib>
#include <fstream>
#include <vector>

#include "storage/error.h"

namespace storage {
namespace {

[[noreturn]] void invalid(std::string_view text, const std::string& why) {
  (void)text;  // never echo the URL: it might carry a password
  throw Error(ErrorKind::invalid_url, "database url: " + why);
}

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(separator, start), text.size());
    if (end > start) parts.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

DatabaseUrl parse_postgres(std::string_view text) {
  DatabaseUrl url;
  url.backend = Backend::postgresql;
  const std::size_t scheme_end = text.find("://") + 3;
  const std::size_t query = text.find('?');
  const std::string_view base = text.substr(0, query);
  const std::string_view authority =
      base.substr(scheme_end, base.find('/', scheme_end) == std::string_view::npos
                                  ? std::string_view::npos
                                  : base.find('/', scheme_end) - scheme_end);
  const std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos && authority.substr(0, at).find(':') != std::string_view::npos) {
    invalid(text,
            "a password in the URL is not accepted; use password_file= or "
            "KMS_DATABASE_PASSWORD");
  }
  std::string kept;
  if (query != std::string_view::npos) {
    for (const std::string& parameter : split(text.substr(query + 1), '&')) {
      const std::size_t equals = parameter.find('=');
      const std::string key = parameter.substr(0, equals);
      const std::string value = equals == std::string::npos ? "" : parameter.substr(equals + 1);
      if (key == "password") {
        invalid(text,
                "a password in the URL is not accepted; use password_file= or "
                "KMS_DATABASE_PASSWORD");
      } else if (key == "password_file") {
        if (value.empty()) invalid(text, "password_file= is empty");
        url.password_file = value;
      } else if (key == "pool_size") {
        char* end = nullptr;
        const unsigned long size = std::strtoul(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || size == 0 || size > 1000) {
          invalid(text, "pool_size=" + value + " is not a number from 1 to 1000");
        }
        url.pool_size = size;
      } else if (key == "migrate") {
        if (value == "auto") {
          url.migration = MigrationPolicy::automatic;
        } else if (value == "check") {
          url.migration = MigrationPolicy::check_only;
        } else {
          invalid(text, "migrate=" + value + " is not auto or check");
        }
      } else {
        kept += (kept.empty() ? "?" : "&") + parameter;
      }
    }
  }
  url.conninfo = std::string(base) + kept;
  return url;
}

}  // namespace

DatabaseUrl DatabaseUrl::parse(std::string_view text) {
  if (text.empty()) invalid(text, "empty");
  if (text.starts_with("postgresql://") || text.starts_with("postgres://")) {
    return parse_postgres(text);
  }
  DatabaseUrl url;
  url.backend = Backend::sqlite;
  if (text.starts_with("sqlite:")) {
    url.sqlite_path = std::string(text.substr(7));
    if (url.sqlite_path.starts_with("//")) url.sqlite_path.erase(0, 2);  // sqlite:///abs
    if (url.sqlite_path.empty()) invalid(text, "sqlite: names no file");
    return url;
  }
  const std::size_t colon = text.find("://");
  if (colon != std::string_view::npos) {
    invalid(text, "unknown scheme \"" + std::string(text.substr(0, colon)) +
                      "\" (sqlite:PATH or postgresql://...)");
  }
  url.sqlite_path = std::string(text);  // a plain path: the SQLite file of [database] path
  return url;
}

std::string DatabaseUrl::display() const {
  return backend == Backend::sqlite ? "sqlite:" + sqlite_path : conninfo;
}

std::string anchor_database(const std::string& database, const std::string& base) {
  if (database.starts_with("postgresql://") || database.starts_with("postgres://")) {
    return database;
  }
  const bool prefixed = database.starts_with("sqlite:");
  const std::string path = prefixed ? database.substr(7) : database;
  if (path.empty() || path.front() == '/' || path.front() == ':' || path.starts_with("file:")) {
    return database;
  }
  return (prefixed ? "sqlite:" : "") + base + "/" + path;
}

std::string read_database_password(const DatabaseUrl& url) {
  if (!url.password_file.empty()) {
    std::ifstream file(url.password_file);
    if (!file) {
      throw Error(ErrorKind::invalid_url,
                  "database password_file " + url.password_file + " cannot be read");
    }
    std::string password;
    std::getline(file, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
    return password;
  }
  if (const char* value = std::getenv("KMS_DATABASE_PASSWORD")) return value;
  return {};
}

}  // namespace storage
