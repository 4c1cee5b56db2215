// Real SRTP media for the demo and the end-to-end test (libsrtp2): RTP packets protected
// with a party's media key (master key + salt from the KMS), sent over UDP; the bridge
// unprotects with the sender's key and re-protects for each listener with theirs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kms/client/secret.h"

namespace kms::media {

class MediaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One libsrtp2 session in one direction. suite: 1 AES_CM_128_HMAC_SHA1_80, 2 AEAD_AES_128_GCM.
class SrtpSession {
 public:
  enum class Direction { protect, unprotect };
  SrtpSession(Direction direction, std::uint8_t suite, client::ByteView master_key,
              client::ByteView master_salt);
  ~SrtpSession();
  SrtpSession(const SrtpSession&) = delete;
  SrtpSession& operator=(const SrtpSession&) = delete;

  std::vector<std::uint8_t> protect(std::vector<std::uint8_t> rtp);
  // Throws MediaError when authentication fails (wrong key, tampered, replayed).
  std::vector<std::uint8_t> unprotect(std::vector<std::uint8_t> srtp);

 private:
  void* session_ = nullptr;  // srtp_t
};

// RTP header (12 bytes, version 2, no CSRC) + payload.
std::vector<std::uint8_t> make_rtp(std::uint16_t sequence, std::uint32_t timestamp,
                                   std::uint32_t ssrc, std::uint8_t payload_type,
                                   const std::string& payload);
std::string rtp_payload(const std::vector<std::uint8_t>& rtp);  // throws MediaError

// A bound UDP socket on loopback (or any address).
class UdpSocket {
 public:
  explicit UdpSocket(const std::string& address = "127.0.0.1", std::uint16_t port = 0);
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;
  std::uint16_t port() const;
  void send_to(const std::vector<std::uint8_t>& data, const std::string& address,
               std::uint16_t port);
  // Empty on timeout.
  std::vector<std::uint8_t> receive(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
};

struct Endpoint {
  std::string address;
  std::uint16_t port = 0;
  static Endpoint parse(const std::string& text);  // "127.0.0.1:5004"
};

struct MediaKeyMaterial {
  std::uint8_t suite = 1;
  client::Secret master_key;
  client::Secret master_salt;
};

struct SenderStats {
  std::uint64_t sent = 0;
};
// UE-A: sends `packets` RTP packets, payload "<text> #<n>", SRTP-protected with `key`.
SenderStats run_sender(UdpSocket& socket, const Endpoint& to, const MediaKeyMaterial& key,
                       std::uint32_t ssrc, int packets, std::chrono::milliseconds interval,
                       const std::string& text);

struct RelayOutput {
  Endpoint to;
  MediaKeyMaterial key;
};
struct RelayStats {
  std::uint64_t received = 0;
  std::uint64_t authenticated = 0;
  std::uint64_t rejected = 0;  // failed SRTP authentication under the sender's key
  std::uint64_t forwarded = 0;
};
// The bridge: unprotects with the sender's key, re-protects per output, until `packets`
// authentic packets were relayed or `timeout` passes without traffic.
RelayStats run_relay(UdpSocket& socket, const MediaKeyMaterial& sender_key,
                     const std::vector<RelayOutput>& outputs, int packets,
                     std::chrono::milliseconds timeout);

struct ReceiverStats {
  std::uint64_t received = 0;
  std::uint64_t authenticated = 0;
  std::uint64_t rejected = 0;
  std::uint64_t payload_ok = 0;
  std::string last_payload;
};
// UE-B/UE-C: until `packets` authentic packets arrived or `timeout` passes without traffic;
// counts payloads that start with `expected_prefix`.
ReceiverStats run_receiver(UdpSocket& socket, const MediaKeyMaterial& key, int packets,
                           const std::string& expected_prefix, std::chrono::milliseconds timeout);

}  // namespace kms::media
