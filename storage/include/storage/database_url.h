// Which database the KMS keeps its records in, from one setting ([database] url):
//   sqlite:PATH               an SQLite file (a bare PATH, the old [database] path, means the same)
//   postgresql://...          a PostgreSQL server (libpq connection URI; postgres:// too)
// PostgreSQL query parameters of our own, removed before the URI goes to libpq:
//   password_file=PATH        the login password is the file's first line
//   pool_size=N               connections per process (default 8)
//   migrate=auto|check        auto (default): create or upgrade the schema when opening;
//                             check: refuse a missing or old schema (kms-provision db migrate)
// A password is never taken from the URL itself (it would end up in configuration files and
// logs): password_file, else the environment variable KMS_DATABASE_PASSWORD, else libpq's
// own ~/.pgpass / PGPASSFILE.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace storage {

enum class Backend { sqlite, postgresql };
enum class MigrationPolicy { automatic, check_only };

struct DatabaseUrl {
  Backend backend = Backend::sqlite;
  std::string sqlite_path;  // sqlite
  std::string conninfo;     // postgresql: the URI for libpq, our parameters removed
  std::string password_file;
  std::size_t pool_size = 8;
  MigrationPolicy migration = MigrationPolicy::automatic;

  // Throws Error(invalid_url) naming what is wrong.
  static DatabaseUrl parse(std::string_view text);
  // For messages and logs: the path, or the URI without password parameters.
  std::string display() const;
};

// A database setting with a relative SQLite path (a bare path or sqlite:PATH) made relative
// to `base` (a configuration file's folder); PostgreSQL URLs and absolute paths unchanged.
std::string anchor_database(const std::string& database, const std::string& base);

// The PostgreSQL password (empty: none configured, libpq's defaults apply). Throws
// Error(invalid_url) when password_file can't be read.
std::string read_database_password(const DatabaseUrl& url);

}  // namespace storage
