// kmsd: the KMS's HTTPS server. See docs/SERVER.md.
//   kmsd --config kmsd.toml [--listen HOST:PORT] [--port-file FILE] [...]
//   kmsd --check-config kmsd.toml
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "hsm/error.h"
#include "kms/server/backend.h"
#include "kms/server/config.h"
#include "kms/server/server.h"
#include "kms/server/tls.h"

namespace {

namespace fs = std::filesystem;
using namespace kms::server;

constexpr int kExitConfig = 1;
constexpr int kExitStart = 2;

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
              << "\n  token " << c.token.uri << " via " << c.token.module << " (profile "
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
  CLI11_PARSE(app, argc, argv);

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
  if (workers > 0) config.server.worker_threads = workers;
  if (io_threads > 0) config.server.io_threads = io_threads;
  if (loaded.ok()) loaded.problems = validate(config);
  if (!loaded.ok()) {
    std::cerr << "kmsd: " << config_file << ": invalid configuration:\n";
    for (const auto& problem : loaded.problems) std::cerr << "  - " << problem << "\n";
    return kExitConfig;
  }

  Logger logger(config.log.level, config.log.format);
  Metrics metrics;
  try {
    KmsBackend backend(config, metrics, logger);
    Server server(config, backend.backend(), metrics, logger);
    const std::uint16_t port = server.listen();
    if (!port_file.empty()) write_port_file(port_file, port);
    logger.info("listening", {{"address", config.server.listen_address},
                              {"port", std::to_string(port)},
                              {"token", backend.token().token().label},
                              {"profile", backend.token().profile().name},
                              {"audit", config.audit.path.string()}});
    server.run();
    logger.info("stopped");
    return 0;
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
