#include "connection_admission.h"

#include <algorithm>

namespace kms::server {

std::string source_key(const boost::asio::ip::address& address) {
  namespace ip = boost::asio::ip;
  if (address.is_v4()) return address.to_string();
  const ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, v6).to_string();
  ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return ip::address_v6(bytes).to_string() + "/64";
}

ConnectionAdmission::ConnectionAdmission(const Limits& limits, Metrics& metrics)
    : metrics_(metrics) {
  // Each budget lies within the one above it.
  budgets_.connections = limits.max_connections;
  budgets_.handshakes = std::min(limits.max_handshakes, budgets_.connections);
  budgets_.per_source = std::min(limits.max_connections_per_source, budgets_.connections);
  budgets_.handshakes_per_source =
      std::min({limits.max_handshakes_per_source, budgets_.per_source, budgets_.handshakes});
}

ConnectionAdmission::Decision ConnectionAdmission::admit(const std::string& source) {
  std::lock_guard lock(mutex_);
  Decision decision;
  {
    const auto it = sources_.find(source);
    if (it != sources_.end() && (it->second.total >= budgets_.per_source ||
                                 it->second.handshaking.size() >= budgets_.handshakes_per_source)) {
      if (it->second.handshaking.empty()) {
        ++metrics_.connections_rejected_per_source;
        decision.verdict = Verdict::refused_per_source;
        return decision;
      }
      decision.evicted.push_back(evict(*it->second.handshaking.begin()));
    }
  }
  if (open_ >= budgets_.connections || handshaking_ >= budgets_.handshakes) {
    if (handshaking_ == 0) {
      decision.verdict = Verdict::refused;
      return decision;
    }
    decision.evicted.push_back(evict(heaviest_oldest_handshake()));
  }
  decision.verdict = Verdict::admitted;
  decision.ticket = ++last_ticket_;
  Source& counted = sources_[source];
  ++counted.total;
  counted.handshaking.insert(decision.ticket);
  entries_.emplace(decision.ticket, Entry{source, true, {}});
  ++open_;
  ++handshaking_;
  metrics_.connections_open = static_cast<std::int64_t>(open_);
  metrics_.connections_handshaking = static_cast<std::int64_t>(handshaking_);
  return decision;
}

void ConnectionAdmission::attach(std::uint64_t ticket, std::weak_ptr<Connection> connection) {
  std::lock_guard lock(mutex_);
  if (const auto it = entries_.find(ticket); it != entries_.end()) {
    it->second.connection = std::move(connection);
  }
}

bool ConnectionAdmission::established(std::uint64_t ticket) {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(ticket);
  if (it == entries_.end()) return false;
  if (it->second.handshaking) {
    it->second.handshaking = false;
    sources_[it->second.source].handshaking.erase(ticket);
    --handshaking_;
    metrics_.connections_handshaking = static_cast<std::int64_t>(handshaking_);
  }
  return true;
}

void ConnectionAdmission::release(std::uint64_t ticket) {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(ticket);
  if (it == entries_.end()) return;
  forget(it);
}

void ConnectionAdmission::forget(std::unordered_map<std::uint64_t, Entry>::iterator it) {
  const auto source = sources_.find(it->second.source);
  if (it->second.handshaking) {
    source->second.handshaking.erase(it->first);
    --handshaking_;
    metrics_.connections_handshaking = static_cast<std::int64_t>(handshaking_);
  }
  if (--source->second.total == 0) sources_.erase(source);
  --open_;
  metrics_.connections_open = static_cast<std::int64_t>(open_);
  entries_.erase(it);
}

std::weak_ptr<Connection> ConnectionAdmission::evict(std::uint64_t ticket) {
  const auto it = entries_.find(ticket);
  std::weak_ptr<Connection> connection = it->second.connection;
  forget(it);
  ++metrics_.handshakes_evicted;
  return connection;
}

// Linear in the number of sources, which max_connections bounds; only when a budget is full.
std::uint64_t ConnectionAdmission::heaviest_oldest_handshake() const {
  const Source* heaviest = nullptr;
  for (const auto& [key, source] : sources_) {
    if (source.handshaking.empty()) continue;
    if (!heaviest || source.handshaking.size() > heaviest->handshaking.size() ||
        (source.handshaking.size() == heaviest->handshaking.size() &&
         *source.handshaking.begin() < *heaviest->handshaking.begin())) {
      heaviest = &source;
    }
  }
  return *heaviest->handshaking.begin();
}

}  // namespace kms::server
