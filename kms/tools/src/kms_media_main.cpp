// kms-media: real SRTP media over UDP for the demo, keyed with what kms-client wrote.
//   kms-media receive --key-file bob.key.json --packets 20 --expect "hello" --port-file F
//   kms-media relay --bridge-keys keys.json --from sip:alice@...
//       --to sip:bob@...=127.0.0.1:PORT --to sip:carol@...=127.0.0.1:PORT --packets 20 --port-file
//       F
//   kms-media send --key-file alice.key.json --to 127.0.0.1:PORT --packets 20 --text "hello"
// Exit 0 only when every expected packet arrived authentic (and, for receive, with the
// expected payload); 1 when packets were missing, not authentic or carried another payload;
// 2 for a usage error (unknown option, missing argument) or a local failure (key file,
// socket).
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>

#include "key_files.h"
#include "kms/version.h"
#include "srtp_media.h"

namespace {

using namespace kms;

constexpr int kUsage = 2;

media::MediaKeyMaterial material(tools::MediaKeyFile&& file) {
  return {file.suite, std::move(file.master_key), std::move(file.master_salt)};
}

void write_port(const std::string& path, std::uint16_t port) {
  if (path.empty()) return;
  {
    std::ofstream out(path + ".tmp");
    out << port << "\n";
  }
  std::rename((path + ".tmp").c_str(), path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kms-media: SRTP (libsrtp2) sender, bridge relay and receiver over UDP"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kms-media " KMS_VERSION);
  std::string key_file, to, text = "conference media", expect, port_file, bridge_keys, from;
  std::string listen = "127.0.0.1";
  std::vector<std::string> outputs;
  int packets = 20;
  int interval_ms = 5;
  int timeout_ms = 5000;
  std::uint32_t ssrc = 0x4b4d5331;

  auto* send = app.add_subcommand("send", "UE-A: send SRTP-protected RTP packets");
  send->add_option("--key-file", key_file, "media key file (kms-client --out-key)")->required();
  send->add_option("--to", to, "HOST:PORT of the bridge")->required();
  send->add_option("--packets", packets)->capture_default_str();
  send->add_option("--interval-ms", interval_ms)->capture_default_str();
  send->add_option("--text", text, "payload text (each packet: TEXT #n)")->capture_default_str();
  send->add_option("--ssrc", ssrc)->capture_default_str();

  auto* relay = app.add_subcommand(
      "relay", "Bridge: unprotect with the sender's key, re-protect for each listener");
  relay->add_option("--bridge-keys", bridge_keys, "keys file from kms-client bridge fetch")
      ->required();
  relay->add_option("--from", from, "member whose media arrives (its key unprotects)")->required();
  relay->add_option("--to", outputs, "MEMBER=HOST:PORT, repeatable")->required();
  relay->add_option("--listen", listen, "address to bind (port from the OS)")
      ->capture_default_str();
  relay->add_option("--port-file", port_file, "write the bound UDP port here");
  relay->add_option("--packets", packets)->capture_default_str();
  relay->add_option("--timeout-ms", timeout_ms, "give up after this long without traffic")
      ->capture_default_str();

  auto* receive = app.add_subcommand("receive", "UE-B/UE-C: receive and unprotect");
  receive->add_option("--key-file", key_file, "media key file")->required();
  receive->add_option("--listen", listen)->capture_default_str();
  receive->add_option("--port-file", port_file, "write the bound UDP port here");
  receive->add_option("--packets", packets)->capture_default_str();
  receive->add_option("--expect", expect, "payload prefix every packet must carry")->required();
  receive->add_option("--timeout-ms", timeout_ms)->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // app.exit prints the problem (or the help); CLI11's own codes are not kms-media's.
    return app.exit(error) == 0 ? 0 : kUsage;
  }

  try {
    if (send->parsed()) {
      media::UdpSocket socket;
      const auto stats = media::run_sender(socket, media::Endpoint::parse(to),
                                           material(tools::read_media_key(key_file)), ssrc, packets,
                                           std::chrono::milliseconds(interval_ms), text);
      std::cout << "sent " << stats.sent << " SRTP packets to " << to << "\n";
      return 0;
    }
    if (relay->parsed()) {
      auto keys = tools::read_bridge_keys(bridge_keys);
      std::optional<media::MediaKeyMaterial> sender;
      std::vector<media::RelayOutput> relay_outputs;
      for (const auto& output : outputs) {
        const auto equals = output.find('=');
        if (equals == std::string::npos)
          throw std::runtime_error("--to " + output + ": not MEMBER=HOST:PORT");
        relay_outputs.push_back({media::Endpoint::parse(output.substr(equals + 1)), {}});
        bool found = false;
        for (auto& key : keys) {
          if (key.identity == output.substr(0, equals)) {
            relay_outputs.back().key = {key.suite, key.master_key, key.master_salt};
            found = true;
          }
        }
        if (!found)
          throw std::runtime_error("no key for " + output.substr(0, equals) + " in " + bridge_keys);
      }
      for (auto& key : keys) {
        if (key.identity == from)
          sender = media::MediaKeyMaterial{key.suite, key.master_key, key.master_salt};
      }
      if (!sender) throw std::runtime_error("no key for " + from + " in " + bridge_keys);
      media::UdpSocket socket(listen);
      write_port(port_file, socket.port());
      const auto stats = media::run_relay(socket, *sender, relay_outputs, packets,
                                          std::chrono::milliseconds(timeout_ms));
      std::cout << "bridge relayed " << stats.authenticated << "/" << packets
                << " authentic packets to " << relay_outputs.size() << " listeners ("
                << stats.forwarded << " sent, " << stats.rejected << " rejected)\n";
      return stats.authenticated == static_cast<std::uint64_t>(packets) && stats.rejected == 0 ? 0
                                                                                               : 1;
    }
    if (receive->parsed()) {
      const auto key = tools::read_media_key(key_file);
      const std::string who = key.identity;
      media::UdpSocket socket(listen);
      write_port(port_file, socket.port());
      const auto stats =
          media::run_receiver(socket, material(tools::read_media_key(key_file)), packets, expect,
                              std::chrono::milliseconds(timeout_ms));
      std::cout << who << " received " << stats.authenticated << "/" << packets
                << " authentic packets (" << stats.rejected << " rejected), " << stats.payload_ok
                << " with the expected payload; last: \"" << stats.last_payload << "\"\n";
      return stats.payload_ok == static_cast<std::uint64_t>(packets) && stats.rejected == 0 ? 0 : 1;
    }
  } catch (const std::exception& error) {
    std::cerr << "kms-media: " << error.what() << "\n";
    return 2;
  }
  return 2;
}
