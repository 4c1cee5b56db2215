// kmsd: the KMS's HTTPS server. See docs/SERVER.md.
//   kmsd --config kmsd.toml [--listen HOST:PORT] [--port-file FILE] [...]
//   kmsd --check-config kmsd.toml
//   kmsd --version
// Exit status: 0 clean stop, 1 usage or invalid configuration, 2 could not start, 3 the
// token holds other KMS keys than the database records (the start-time key check).
// Under systemd (Type=notify): READY=1 once listening; log lines carry journald priorities.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "hsm/error.h"
#include "kms/server/backend.h"
#include "kms/server/config.h"
#include "kms/server/heap_allocator.h"
#include "kms/server/server.h"
#include "kms/server/service_notify.h"
#include "kms/server/tls.h"
#include "kms/version.h"
#include "tokens/key_check.h"

namespace {

namespace fs = std::filesystem;
using namespace kms::server;

constexpr int kExitConfig = 1;  // also every usage error (unknown option, missing value)
constexpr int kExitStart = 2;
constexpr int kExitKeyMismatch = 3;

// Written atomically (temp file + rename) so a reader never sees a partial number.
void write_port_file(const std::string& path, std::uint16_t port) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << port << "\n";
    if (!out) throw std::runtime_error("cannot write " + temporary);
  }
  fs::rename(temporary, path);
}

int check_config(const std::string& file) {
  LoadResult loaded = load_config(file);
  if (loaded.ok()) {
    try {
      const Config& c = loaded.config;
      (void)make_server_context(
          {c.server.tls_cert, c.server.tls_key, c.server.bridge_ca, c.server.tls_min_version});
    } catch (const std::exception& error) {
      loaded.problems.push_back(error.what());
    }
  }
  if (loaded.ok()) {
    const Config& c = loaded.config;
    std::cout << "kmsd: " << file << ": configuration OK\n"
              << "  listen " << c.server.listen_address << ":" << c.server.listen_port
              << ", TLS >= " << (c.server.tls_min_version == TlsMinVersion::tls1_3 ? "1.3" : "1.2")
              << "\n  token " << c.token.uri << " via " << c.token.resolved_module() << " (profile "
              << c.token.profile << ")\n  database " << c.token.database << "\n  audit "
              << c.audit.path.string() << "\n";
    return 0;
  }
  std::cerr << "kmsd: " << file << ": " << loaded.problems.size() << " problem"
            << (loaded.problems.size() == 1 ? "" : "s") << ":\n";
  for (const auto& problem : loaded.problems) std::cerr << "  - " << problem << "\n";
  return kExitConfig;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kmsd: the conference-call Key Management Server (HTTPS, mutual TLS for bridges)"};
  std::string config_file;
  std::string check_file;
  std::string listen;
  std::string port_file;
  std::string audit_path;
  std::string log_level;
  std::size_t workers = 0;
  std::size_t io_threads = 0;
  std::string priority_prefix = "auto";
  app.set_version_flag("--version", "kmsd " KMS_VERSION);
  app.add_option("-c,--config", config_file, "TOML configuration file")->check(CLI::ExistingFile);
  app.add_option("--check-config", check_file,
                 "validate a configuration file, explain each problem, and exit (0: valid)")
      ->check(CLI::ExistingFile);
  app.add_option("--listen", listen, "override server.listen (HOST:PORT; port 0: any free port)");
  app.add_option("--port-file", port_file, "write the bound port to this file once listening");
  app.add_option("--audit-log", audit_path, "override audit.path");
  app.add_option("--log-level", log_level, "override log.level (debug, info, warn, error)");
  app.add_option("--worker-threads", workers, "override server.worker_threads");
  app.add_option("--io-threads", io_threads, "override server.io_threads");
  app.add_option("--log-priority-prefix", priority_prefix,
                 "start each log line with its journald priority (<3> error, <4> warn, <6> info, "
                 "<7> debug): auto (when stderr is the journal, $JOURNAL_STREAM), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // app.exit prints the problem (or the help, the version); CLI11's own codes are not kmsd's.
    return app.exit(error) == 0 ? 0 : kExitConfig;
  }

  if (!check_file.empty()) return check_config(check_file);
  if (config_file.empty()) {
    std::cerr << "kmsd: --config FILE is required (or --check-config FILE); see --help\n";
    return kExitConfig;
  }

  LoadResult loaded = load_config(config_file);
  Config& config = loaded.config;
  if (!listen.empty() &&
      !parse_listen(listen, config.server.listen_address, config.server.listen_port)) {
    loaded.problems.push_back("--listen " + listen + ": not HOST:PORT");
  }
  if (!audit_path.empty()) config.audit.path = audit_path;
  if (!log_level.empty()) {
    if (auto level = parse_log_level(log_level)) {
      config.log.level = *level;
    } else {
      loaded.problems.push_back("--log-level " + log_level +
                                ": must be debug, info, warn or error");
    }
  }
  // The ranges of server.worker_threads / server.io_threads (docs/SERVER.md); 0 keeps the
  // file's value.
  if (workers > kMaxWorkerThreads) {
    loaded.problems.push_back("--worker-threads " + std::to_string(workers) +
                              " is out of range [0, " + std::to_string(kMaxWorkerThreads) + "]");
  } else if (workers > 0) {
    config.server.worker_threads = workers;
  }
  if (io_threads > kMaxIoThreads) {
    loaded.problems.push_back("--io-threads " + std::to_string(io_threads) +
                              " is out of range [0, " + std::to_string(kMaxIoThreads) + "]");
  } else if (io_threads > 0) {
    config.server.io_threads = io_threads;
  }
  if (loaded.ok()) loaded.problems = validate(config);
  if (!loaded.ok()) {
    std::cerr << "kmsd: " << config_file << ": invalid configuration:\n";
    for (const auto& problem : loaded.problems) std::cerr << "  - " << problem << "\n";
    return kExitConfig;
  }

  const bool journal_priority = priority_prefix == "always" ||
                                (priority_prefix == "auto" &&
                                 is_journal_stream(STDERR_FILENO, std::getenv("JOURNAL_STREAM")));
  Logger logger(config.log.level, config.log.format, journal_priority);
  Metrics metrics;
  try {
    KmsBackend backend(config, metrics, logger);
    Server server(config, backend.backend(), metrics, logger);
    const std::uint16_t port = server.listen();
    if (!port_file.empty()) write_port_file(port_file, port);
    const HeapAllocator allocator = heap_allocator();
    logger.info("listening", {{"address", config.server.listen_address},
                              {"port", std::to_string(port)},
                              {"token", backend.token().token().label},
                              {"profile", backend.token().profile().name},
                              {"audit", config.audit.path.string()},
                              {"malloc", allocator.name + " " + allocator.version}});
    // systemd (Type=notify): started once the listener is bound; a no-op elsewhere.
    notify_service_manager("READY=1\nSTATUS=listening on " + config.server.listen_address + ":" +
                           std::to_string(port));
    server.run();
    backend.flush_audit_journal();  // while the server still holds the signals
    logger.info("stopped");
    return 0;
  } catch (const tokens::KeyMismatchError& error) {
    for (const tokens::KeyCheckMismatch& m : error.mismatches()) {
      logger.error("cannot start: this token holds another key than the database records",
                   {{"key", m.label},
                    {"token_kcv", m.token_kcv},
                    {"recorded", tokens::describe(m.recorded)}});
    }
    logger.error("cannot start: key check failed", {{"error", error.what()}});
    return kExitKeyMismatch;
  } catch (const hsm::Error& error) {
    if (error.kind() == hsm::ErrorKind::pkcs11) {
      logger.error("cannot start: token error", {{"rv", hsm::rv_name(error.rv())},
                                                 {"function", error.function()},
                                                 {"error", error.what()}});
    } else {  // no CK_RV: the PIN source, the URI, the module, a missing token
      logger.error("cannot start", {{"kind", hsm::kind_name(error.kind())},
                                    {"function", error.function()},
                                    {"error", error.what()}});
    }
  } catch (const std::exception& error) {
    logger.error("cannot start", {{"error", error.what()}});
  }
  return kExitStart;
}
