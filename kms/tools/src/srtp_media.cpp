#include "srtp_media.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <srtp2/srtp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

namespace kms::media {
namespace {

void init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (srtp_init() != srtp_err_status_ok) throw MediaError("srtp_init failed");
  });
}

}  // namespace

SrtpSession::SrtpSession(Direction direction, std::uint8_t suite, client::ByteView master_key,
                         client::ByteView master_salt) {
  init_once();
  srtp_policy_t policy;
  std::memset(&policy, 0, sizeof policy);
  std::size_t salt_length = 0;
  if (suite == 1) {
    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
    salt_length = 14;
  } else if (suite == 2) {
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp);
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
    salt_length = 12;
  } else {
    throw MediaError("unsupported SRTP suite " + std::to_string(suite));
  }
  if (master_key.size() != 16 || master_salt.size() != salt_length) {
    throw MediaError("master key/salt lengths do not fit suite " + std::to_string(suite));
  }
  client::Secret key(master_key.size() + master_salt.size());
  std::memcpy(key.data(), master_key.data(), master_key.size());
  std::memcpy(key.data() + master_key.size(), master_salt.data(), master_salt.size());
  policy.ssrc.type = direction == Direction::protect ? ssrc_any_outbound : ssrc_any_inbound;
  policy.key = key.data();
  policy.window_size = 128;
  policy.allow_repeat_tx = 0;
  policy.next = nullptr;
  srtp_t session = nullptr;
  if (const auto status = srtp_create(&session, &policy); status != srtp_err_status_ok) {
    throw MediaError("srtp_create failed: status " + std::to_string(status));
  }
  session_ = session;
}

SrtpSession::~SrtpSession() {
  if (session_) srtp_dealloc(static_cast<srtp_t>(session_));
}

std::vector<std::uint8_t> SrtpSession::protect(std::vector<std::uint8_t> rtp) {
  int length = static_cast<int>(rtp.size());
  rtp.resize(rtp.size() + SRTP_MAX_TRAILER_LEN);
  if (const auto status = srtp_protect(static_cast<srtp_t>(session_), rtp.data(), &length);
      status != srtp_err_status_ok) {
    throw MediaError("srtp_protect failed: status " + std::to_string(status));
  }
  rtp.resize(static_cast<std::size_t>(length));
  return rtp;
}

std::vector<std::uint8_t> SrtpSession::unprotect(std::vector<std::uint8_t> srtp) {
  int length = static_cast<int>(srtp.size());
  if (const auto status = srtp_unprotect(static_cast<srtp_t>(session_), srtp.data(), &length);
      status != srtp_err_status_ok) {
    throw MediaError("srtp_unprotect failed: status " + std::to_string(status) +
                     (status == srtp_err_status_auth_fail ? " (authentication failed)" : ""));
  }
  srtp.resize(static_cast<std::size_t>(length));
  return srtp;
}

std::vector<std::uint8_t> make_rtp(std::uint16_t sequence, std::uint32_t timestamp,
                                   std::uint32_t ssrc, std::uint8_t payload_type,
                                   const std::string& payload) {
  std::vector<std::uint8_t> packet(12 + payload.size());
  packet[0] = 0x80;  // V=2
  packet[1] = payload_type & 0x7f;
  packet[2] = static_cast<std::uint8_t>(sequence >> 8);
  packet[3] = static_cast<std::uint8_t>(sequence);
  for (int i = 0; i < 4; ++i) {
    packet[4 + i] = static_cast<std::uint8_t>(timestamp >> (24 - 8 * i));
    packet[8 + i] = static_cast<std::uint8_t>(ssrc >> (24 - 8 * i));
  }
  if (!payload.empty()) std::memcpy(packet.data() + 12, payload.data(), payload.size());
  return packet;
}

std::string rtp_payload(const std::vector<std::uint8_t>& rtp) {
  if (rtp.size() < 12 || (rtp[0] >> 6) != 2) throw MediaError("not an RTP packet");
  const std::size_t header = 12 + 4 * static_cast<std::size_t>(rtp[0] & 0x0f);
  if (rtp.size() < header) throw MediaError("truncated RTP packet");
  return std::string(rtp.begin() + static_cast<std::ptrdiff_t>(header), rtp.end());
}

UdpSocket::UdpSocket(const std::string& address, std::uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw MediaError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    ::close(fd_);
    throw MediaError("not an IPv4 address: " + address);
  }
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int error = errno;
    ::close(fd_);
    throw MediaError("bind " + address + ":" + std::to_string(port) + ": " + std::strerror(error));
  }
}

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) ::close(fd_);
}

std::uint16_t UdpSocket::port() const {
  sockaddr_in addr{};
  socklen_t length = sizeof addr;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
  return ntohs(addr.sin_port);
}

void UdpSocket::send_to(const std::vector<std::uint8_t>& data, const std::string& address,
                        std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    throw MediaError("not an IPv4 address: " + address);
  }
  if (::sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) <
      0) {
    throw MediaError(std::string("sendto: ") + std::strerror(errno));
  }
}

std::vector<std::uint8_t> UdpSocket::receive(std::chrono::milliseconds timeout) {
  pollfd descriptor{fd_, POLLIN, 0};
  const int ready = ::poll(&descriptor, 1, static_cast<int>(timeout.count()));
  if (ready <= 0) return {};
  std::vector<std::uint8_t> buffer(2048);
  const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
  if (n <= 0) return {};
  buffer.resize(static_cast<std::size_t>(n));
  return buffer;
}

Endpoint Endpoint::parse(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) throw MediaError("not HOST:PORT: " + text);
  Endpoint endpoint{text.substr(0, colon), 0};
  const int port = std::stoi(text.substr(colon + 1));
  if (port <= 0 || port > 65535) throw MediaError("bad port in " + text);
  endpoint.port = static_cast<std::uint16_t>(port);
  return endpoint;
}

SenderStats run_sender(UdpSocket& socket, const Endpoint& to, const MediaKeyMaterial& key,
                       std::uint32_t ssrc, int packets, std::chrono::milliseconds interval,
                       const std::string& text) {
  SrtpSession session(SrtpSession::Direction::protect, key.suite, key.master_key, key.master_salt);
  SenderStats stats;
  for (int i = 0; i < packets; ++i) {
    const auto rtp =
        make_rtp(static_cast<std::uint16_t>(1000 + i), static_cast<std::uint32_t>(160 * i), ssrc, 0,
                 text + " #" + std::to_string(i));
    socket.send_to(session.protect(rtp), to.address, to.port);
    ++stats.sent;
    if (interval.count() > 0) std::this_thread::sleep_for(interval);
  }
  return stats;
}

RelayStats run_relay(UdpSocket& socket, const MediaKeyMaterial& sender_key,
                     const std::vector<RelayOutput>& outputs, int packets,
                     std::chrono::milliseconds timeout) {
  SrtpSession inbound(SrtpSession::Direction::unprotect, sender_key.suite, sender_key.master_key,
                      sender_key.master_salt);
  std::vector<std::unique_ptr<SrtpSession>> outbound;
  for (const auto& output : outputs) {
    outbound.push_back(std::make_unique<SrtpSession>(SrtpSession::Direction::protect,
                                                     output.key.suite, output.key.master_key,
                                                     output.key.master_salt));
  }
  RelayStats stats;
  while (stats.authenticated < static_cast<std::uint64_t>(packets)) {
    auto packet = socket.receive(timeout);
    if (packet.empty()) break;
    ++stats.received;
    std::vector<std::uint8_t> rtp;
    try {
      rtp = inbound.unprotect(std::move(packet));
    } catch (const MediaError&) {
      ++stats.rejected;
      continue;
    }
    ++stats.authenticated;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      socket.send_to(outbound[i]->protect(rtp), outputs[i].to.address, outputs[i].to.port);
      ++stats.forwarded;
    }
  }
  return stats;
}

ReceiverStats run_receiver(UdpSocket& socket, const MediaKeyMaterial& key, int packets,
                           const std::string& expected_prefix, std::chrono::milliseconds timeout) {
  SrtpSession session(SrtpSession::Direction::unprotect, key.suite, key.master_key,
                      key.master_salt);
  ReceiverStats stats;
  while (stats.authenticated < static_cast<std::uint64_t>(packets)) {
    auto packet = socket.receive(timeout);
    if (packet.empty()) break;
    ++stats.received;
    try {
      const auto rtp = session.unprotect(std::move(packet));
      ++stats.authenticated;
      stats.last_payload = rtp_payload(rtp);
      if (stats.last_payload.rfind(expected_prefix, 0) == 0) ++stats.payload_ok;
    } catch (const MediaError&) {
      ++stats.rejected;
    }
  }
  return stats;
}

}  // namespace kms::media
