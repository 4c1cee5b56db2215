#include "load_generator.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "key_files.h"
#include "kms/client/bridge_client.h"
#include "kms/client/ue_client.h"
#include "kms/hex.h"
#include "kms/server/wire.h"

namespace kms::tools {
namespace {

using Clock = std::chrono::steady_clock;

std::mt19937_64& rng() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return generator;
}

double uniform() { return std::uniform_real_distribution<double>(0, 1)(rng()); }

std::uint64_t pick(std::uint64_t bound) {
  return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(rng());
}

LatencySummary summarise(std::vector<double>& values) {
  LatencySummary out;
  out.count = values.size();
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  const auto at = [&](double p) {
    return values[static_cast<std::size_t>(p * static_cast<double>(values.size() - 1))];
  };
  out.p50_ms = at(0.50);
  out.p95_ms = at(0.95);
  out.p99_ms = at(0.99);
  out.max_ms = values.back();
  return out;
}

// One conference in flight: the chair, its R_A, the invitees' requests.
struct Conference {
  std::string chair_id;
  std::unique_ptr<client::UeClient> chair;
  client::Secret chair_nonce;
  std::atomic<int> pending_invitations{0};
  std::atomic<int> admitted{0};
  std::mutex mutex;
  Bytes conference_id;
};

enum class JobKind { invitation, retransmission, invalid, bridge_fetch };

struct Job {
  JobKind kind = JobKind::invitation;
  std::shared_ptr<Conference> conference;
  std::string target = "/v1/key-request";
  std::string body;
  Clock::time_point planned;
  // invitation: to check (--verify), retransmit and replay it
  KeyRequest request;
  std::shared_ptr<client::UeClient> responder;
  std::shared_ptr<client::Secret> responder_nonce;
  std::string invalid_kind;  // "bad_tag", "stale", "replay": send one after this invitation
  // retransmission: the answer it must get; invalid: the code it must get
  std::string expected;
};

class Load {
 public:
  explicit Load(const LoadOptions& options)
      : options_(options),
        bridge_(options.bridge_id.empty() ? nullptr
                                          : std::make_unique<client::BridgeClient>(
                                                options.bridge_id, options.bridge_key,
                                                options.profile, options.bridge_key_version)) {
    pool_ =
        options.spread > 0 ? std::min(options.spread, options.subscribers) : options.subscribers;
    if (pool_ < options.max_members) {
      throw std::invalid_argument("fewer subscribers (" + std::to_string(pool_) +
                                  ") than members of the largest conference (" +
                                  std::to_string(options.max_members) + ")");
    }
  }

  LoadReport run() {
    start_ = Clock::now();
    deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(options_.max_duration);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < std::max<std::size_t>(1, options_.connections); ++i) {
      threads.emplace_back([this] { connection(); });
    }
    if (options_.rate > 0) {
      pace();
    } else {
      // Closed loop: as many conferences in flight as connections; each finished one
      // starts the next (finish_conference).
      for (std::size_t i = 0; i < options_.connections; ++i) start_conference(Clock::now());
    }
    {
      std::unique_lock lock(mutex_);
      if (options_.rate > 0) generating_done_ = true;  // closed loop: when the budget runs out
      idle_.wait(lock, [&] { return generating_done_ && outstanding_ == 0; });
      closed_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads) thread.join();
    if (last_answer_ < start_) last_answer_ = Clock::now();  // nothing was answered
    report_.seconds = std::chrono::duration<double>(last_answer_ - start_).count();
    report_.mode = options_.rate > 0 ? "open" : "closed";
    report_.offered_rate = options_.rate;
    report_.key_request = summarise(invitation_ms_);
    report_.bridge_fetch = summarise(bridge_ms_);
    return report_;
  }

 private:
  bool budget_left() { return issued_.load() < options_.max_requests && Clock::now() < deadline_; }

  // Open loop: conferences at the planned times, (members - 1) / rate seconds apart.
  void pace() {
    Clock::time_point next = Clock::now();
    while (budget_left()) {
      std::this_thread::sleep_until(next);
      const unsigned invitees = start_conference(next);
      next += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(invitees / options_.rate));
    }
  }

  void push(Job job) {
    {
      std::lock_guard lock(mutex_);
      ++outstanding_;
      queue_.push_back(std::move(job));
    }
    ready_.notify_one();
  }

  // Returns the number of invitations queued (0 when the budget is spent).
  unsigned start_conference(Clock::time_point planned) {
    if (!budget_left()) {
      stop_generating();
      return 0;
    }
    const unsigned members =
        options_.min_members +
        static_cast<unsigned>(pick(options_.max_members - options_.min_members + 1));
    std::vector<std::uint64_t> chosen;
    while (chosen.size() < members) {
      const std::uint64_t index = pick(pool_);
      if (std::find(chosen.begin(), chosen.end(), index) == chosen.end()) chosen.push_back(index);
    }
    auto conference = std::make_shared<Conference>();
    conference->chair_id = bench_subscriber_id(chosen[0]);
    conference->chair = std::make_unique<client::UeClient>(
        conference->chair_id, bench_subscriber_key(options_.subscriber_seed, conference->chair_id),
        1, options_.profile);
    conference->chair_nonce = client::UeClient::make_nonce();
    conference->pending_invitations = static_cast<int>(members - 1);
    issued_ += members - 1;
    {
      std::lock_guard lock(mutex_);
      ++report_.conferences;
    }
    for (unsigned i = 1; i < members; ++i) {
      Job job;
      job.conference = conference;
      job.planned = planned;
      const std::string id = bench_subscriber_id(chosen[i]);
      job.responder = std::make_shared<client::UeClient>(
          id, bench_subscriber_key(options_.subscriber_seed, id), 1, options_.profile);
      job.responder_nonce = std::make_shared<client::Secret>(client::UeClient::make_nonce());
      job.request.chair_id = conference->chair_id;
      job.request.responder_id = id;
      job.request.chair_envelope =
          conference->chair->chair_envelope(conference->chair_nonce, id, options_.suite);
      job.request.responder_envelope = job.responder->responder_envelope(
          *job.responder_nonce, conference->chair_id, options_.suite);
      job.body = wire::key_request_to_json(job.request);
      if (uniform() < options_.invalid_fraction) {
        static const char* const kinds[] = {"bad_tag", "stale", "replay"};
        job.invalid_kind = kinds[pick(3)];
      }
      // A bad tag or a stale envelope is refused before the registry: sent beside the
      // invitation. A replay needs the admitted request: sent after it (answered()).
      if (job.invalid_kind == "bad_tag" || job.invalid_kind == "stale") {
        push(invalid_request(job, planned));
      }
      push(std::move(job));
    }
    return members - 1;
  }

  // An invalid variant of an invitation, with the code kmsd must refuse it with.
  Job invalid_request(const Job& of, Clock::time_point planned) {
    Job job;
    job.kind = JobKind::invalid;
    job.planned = planned;
    KeyRequest request = of.request;
    const client::Secret other_nonce = client::UeClient::make_nonce();
    if (of.invalid_kind == "bad_tag") {
      // A fresh E_A: the invitation's own may be admitted first, and a request carrying an
      // admitted envelope is a replay before any decryption (PROTOCOL.md, step 5).
      request.chair_envelope = of.conference->chair->chair_envelope(
          of.conference->chair_nonce, request.responder_id, options_.suite);
      request.responder_envelope.back() ^= 0x01;  // the last byte is the GCM tag's
      job.expected = "envelope_authentication_failed";
    } else if (of.invalid_kind == "stale") {
      client::EnvelopeOptions old;
      old.timestamp = static_cast<std::uint64_t>(std::time(nullptr)) - 3600;
      request.responder_envelope =
          of.responder->responder_envelope(other_nonce, request.chair_id, options_.suite, old);
      job.expected = "stale_timestamp";
    } else {  // replay: the admitted E_A with another E_B
      request.responder_envelope =
          of.responder->responder_envelope(other_nonce, request.chair_id, options_.suite);
      job.expected = "replay";
    }
    job.body = wire::key_request_to_json(request);
    std::lock_guard lock(mutex_);
    ++report_.invalid_sent;
    return job;
  }

  void stop_generating() {
    {
      std::lock_guard lock(mutex_);
      generating_done_ = true;
    }
    idle_.notify_all();
  }

  void count_unexpected(const std::string& what) {
    std::lock_guard lock(mutex_);
    ++report_.unexpected[what];
  }

  static std::string code_of(const HttpResult& result) {
    if (result.status == 200) return "ok";
    const auto error = wire::error_from_json(result.body);
    return error ? error->error : "http_" + std::to_string(result.status);
  }

  void connection() {
    std::unique_ptr<HttpsClient> ue, bridge;
    while (true) {
      Job job;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      const auto sent = Clock::now();
      // Closed loop: latency of the exchange; open loop: from the planned start.
      const auto from = options_.rate > 0 ? job.planned : sent;
      std::unique_ptr<HttpsClient>& http = job.kind == JobKind::bridge_fetch ? bridge : ue;
      std::optional<HttpResult> result;
      try {
        if (!http) {
          http = std::make_unique<HttpsClient>(options_.server, job.kind == JobKind::bridge_fetch
                                                                    ? options_.bridge_tls
                                                                    : options_.tls);
        }
        result = http->post_json(job.target, job.body);
      } catch (const TransportError&) {
        http.reset();
        count_unexpected("transport");
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - from).count();
      if (result) {
        try {
          answered(job, *result, ms);
        } catch (const std::exception&) {
          count_unexpected("bad_response");
        }
      }
      if (job.kind == JobKind::invitation) invitation_done(job.conference);
      if (job.kind == JobKind::bridge_fetch) finish_conference();
      std::lock_guard lock(mutex_);
      last_answer_ = Clock::now();
      if (--outstanding_ == 0) idle_.notify_all();
    }
  }

  void answered(Job& job, const HttpResult& result, double ms) {
    const std::string code = code_of(result);
    if (code == "overloaded" || code == "rate_limited") {
      std::lock_guard lock(mutex_);
      ++report_.shed[code];
      return;
    }
    switch (job.kind) {
      case JobKind::invitation: {
        if (code != "ok") return count_unexpected("invitation refused: " + code);
        const KeyResponse response = wire::key_response_from_json(result.body);
        if (options_.verify) {
          (void)job.conference->chair->open_chair_response(
              response.chair_response, job.conference->chair_nonce, job.request.responder_id,
              options_.suite);
          (void)job.responder->open_responder_response(response.responder_response,
                                                       *job.responder_nonce, job.request.chair_id,
                                                       options_.suite, response.conference_id);
        }
        {
          std::lock_guard lock(job.conference->mutex);
          if (job.conference->conference_id.empty()) {
            job.conference->conference_id = response.conference_id;
          } else if (job.conference->conference_id != response.conference_id) {
            return count_unexpected("members got different conference ids");
          }
        }
        ++job.conference->admitted;
        {
          std::lock_guard lock(mutex_);
          ++report_.key_requests_ok;
          invitation_ms_.push_back(ms);
        }
        if (job.invalid_kind == "replay") push(invalid_request(job, Clock::now()));
        if (uniform() < options_.retransmit_fraction) {
          Job again;
          again.kind = JobKind::retransmission;
          again.planned = Clock::now();
          again.body = job.body;
          again.expected = result.body;
          push(std::move(again));
        }
        return;
      }
      case JobKind::retransmission:
        if (code != "ok") return count_unexpected("retransmission refused: " + code);
        if (result.body != job.expected)
          return count_unexpected("retransmission answered differently");
        {
          std::lock_guard lock(mutex_);
          ++report_.retransmissions_ok;
        }
        return;
      case JobKind::invalid:
        if (code != job.expected) {
          return count_unexpected("invalid request (expected " + job.expected + ") got " + code);
        }
        {
          std::lock_guard lock(mutex_);
          ++report_.refused_as_expected[code];
        }
        return;
      case JobKind::bridge_fetch: {
        if (code != "ok") return count_unexpected("bridge fetch refused: " + code);
        const BridgeRelease release = wire::bridge_release_from_json(result.body);
        // The chair and every admitted invitee, once each.
        if (release.keys.size() != static_cast<std::size_t>(job.conference->admitted.load()) + 1) {
          return count_unexpected("bridge release with " + std::to_string(release.keys.size()) +
                                  " keys for " + std::to_string(job.conference->admitted.load()) +
                                  " admitted members + the chair");
        }
        if (options_.verify) {
          std::vector<client::BridgeItem> items;
          for (const ReleasedKey& item : release.keys) {
            items.push_back({item.member_id, item.role, item.key_id, item.suite, item.wrapped});
          }
          (void)bridge_->open_release(release.conference_id, release.bridge_key_version, items);
        }
        std::lock_guard lock(mutex_);
        ++report_.bridge_fetches_ok;
        bridge_ms_.push_back(ms);
        return;
      }
    }
  }

  // The last invitation answered: the bridge fetches (or, without a bridge, the
  // conference is done).
  void invitation_done(const std::shared_ptr<Conference>& conference) {
    if (--conference->pending_invitations != 0) return;
    Bytes id;
    {
      std::lock_guard lock(conference->mutex);
      id = conference->conference_id;
    }
    if (!bridge_ || id.empty()) return finish_conference();
    Job fetch;
    fetch.kind = JobKind::bridge_fetch;
    fetch.conference = conference;
    fetch.target = "/v1/bridge/keys";
    fetch.body = wire::bridge_request_to_json(id, options_.bridge_key_version);
    fetch.planned = Clock::now();
    push(std::move(fetch));
  }

  void finish_conference() {
    if (options_.rate == 0) start_conference(Clock::now());  // closed loop: the next one
  }

  const LoadOptions& options_;
  std::unique_ptr<client::BridgeClient> bridge_;
  std::uint64_t pool_ = 0;
  Clock::time_point start_, deadline_, last_answer_;
  std::atomic<std::uint64_t> issued_{0};
  std::mutex mutex_;
  std::condition_variable ready_, idle_;
  std::deque<Job> queue_;
  std::size_t outstanding_ = 0;
  bool generating_done_ = false;
  bool closed_ = false;
  LoadReport report_;
  std::vector<double> invitation_ms_, bridge_ms_;
};

std::string fixed(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3f", value);
  return buffer;
}

std::string latency_json(const LatencySummary& s) {
  return "{\"count\":" + std::to_string(s.count) + ",\"p50_ms\":" + fixed(s.p50_ms) +
         ",\"p95_ms\":" + fixed(s.p95_ms) + ",\"p99_ms\":" + fixed(s.p99_ms) +
         ",\"max_ms\":" + fixed(s.max_ms) + "}";
}

client::Profile profile_named(const std::string& name) {
  if (name == "aes-ecb-sha256") return client::Profile::aes_ecb_sha256;
  if (name == "sp800-108-cmac") return client::Profile::sp800_108_cmac;
  throw CLI::ValidationError("--profile", "must be aes-ecb-sha256 or sp800-108-cmac");
}

}  // namespace

std::string bench_subscriber_id(std::uint64_t index) {
  return "sip:load-" + std::to_string(index) + "@bench.ims.example.net";
}

client::Secret bench_subscriber_key(const client::Secret& seed, std::string_view identity) {
  client::Secret key(32);
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), seed.data(), static_cast<int>(seed.size()),
           reinterpret_cast<const unsigned char*>(identity.data()), identity.size(), key.data(),
           &length) == nullptr ||
      length != 32) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return key;
}

std::uint64_t LoadReport::unexpected_total() const {
  std::uint64_t total = 0;
  for (const auto& [what, count] : unexpected) total += count;
  return total;
}

std::string LoadReport::to_text() const {
  std::ostringstream out;
  out.precision(1);
  out << std::fixed << mode << " loop";
  if (mode == "open") out << " at " << offered_rate << " key requests/s";
  out << ": " << key_requests_ok << " key requests in " << seconds << " s (" << throughput()
      << "/s), " << conferences << " conferences, " << bridge_fetches_ok << " bridge fetches, "
      << retransmissions_ok << " retransmissions, " << invalid_sent << " invalid\n"
      << "  key request ms p50 " << key_request.p50_ms << " p95 " << key_request.p95_ms << " p99 "
      << key_request.p99_ms << " max " << key_request.max_ms << "; bridge fetch ms p50 "
      << bridge_fetch.p50_ms << " p99 " << bridge_fetch.p99_ms;
  for (const auto& [code, count] : refused_as_expected) {
    out << "\n  refused as expected " << code << ": " << count;
  }
  for (const auto& [code, count] : shed) out << "\n  shed by kmsd (" << code << "): " << count;
  for (const auto& [what, count] : unexpected) out << "\n  UNEXPECTED " << what << ": " << count;
  return out.str();
}

std::string LoadReport::to_json() const {
  boost::json::object expected, surprises, shed_codes;
  for (const auto& [code, count] : refused_as_expected) expected[code] = count;
  for (const auto& [code, count] : shed) shed_codes[code] = count;
  for (const auto& [what, count] : unexpected) surprises[what] = count;
  // Fixed-point numbers (Boost.JSON would print doubles in exponent form).
  return "{\"mode\":\"" + mode + "\",\"offered_rate\":" + fixed(offered_rate) +
         ",\"seconds\":" + fixed(seconds) + ",\"throughput_per_s\":" + fixed(throughput()) +
         ",\"conferences\":" + std::to_string(conferences) +
         ",\"key_requests_ok\":" + std::to_string(key_requests_ok) +
         ",\"retransmissions_ok\":" + std::to_string(retransmissions_ok) +
         ",\"bridge_fetches_ok\":" + std::to_string(bridge_fetches_ok) +
         ",\"invalid_sent\":" + std::to_string(invalid_sent) +
         ",\"refused_as_expected\":" + boost::json::serialize(expected) +
         ",\"shed\":" + boost::json::serialize(shed_codes) +
         ",\"unexpected\":" + boost::json::serialize(surprises) +
         ",\"unexpected_total\":" + std::to_string(unexpected_total()) +
         ",\"key_request\":" + latency_json(key_request) +
         ",\"bridge_fetch\":" + latency_json(bridge_fetch) + "}";
}

LoadReport run_load(const LoadOptions& options) {
  if (!options.server.is_loopback()) {
    throw std::invalid_argument("the load generator only targets loopback servers");
  }
  if (options.subscriber_seed.size() != 32) {
    throw std::invalid_argument("the subscriber seed must be 32 bytes");
  }
  if (options.min_members < 2 || options.max_members < options.min_members) {
    throw std::invalid_argument("conference sizes must satisfy 2 <= min <= max");
  }
  Load load(options);
  return load.run();
}

void add_load_command(CLI::App& app) {
  struct Settings {
    std::string server = "https://127.0.0.1:8443", ca, seed_file, bridge_id, bridge_key_file,
                bridge_cert, bridge_cert_key, profile, personalisation_key_file;
    int timeout_ms = 10000, suite = 1;
    double duration = 30;
    bool json = false;
    LoadOptions options;
  };
  auto settings = std::make_shared<Settings>();
  Settings& s = *settings;
  auto* load = app.add_subcommand(
      "load",
      "Load generator: conferences of bench subscribers (numbered, keys from "
      "--subscriber-seed-file, "
      "provisioned by scripts/bench), invitations in flight together, bridge fetches, ~1 % invalid "
      "requests and retransmissions; closed loop (peak) or --rate (open loop). Loopback only");
  load->add_option("--server", s.server, "kmsd URL, https://HOST:PORT")->capture_default_str();
  load->add_option("--ca", s.ca, "CA certificate(s) that sign kmsd's certificate")
      ->required()
      ->check(CLI::ExistingFile);
  load->add_option("--timeout-ms", s.timeout_ms, "socket timeout")->capture_default_str();
  load->add_option("--subscriber-seed-file", s.seed_file,
                   "file with the 32-byte seed (64 hex digits) the subscriber keys derive from")
      ->required()
      ->check(CLI::ExistingFile);
  load->add_option("--subscribers", s.options.subscribers,
                   "how many bench subscribers are provisioned (0 .. N-1)")
      ->capture_default_str();
  load->add_option("--spread", s.options.spread,
                   "draw members from the first N subscribers only (0: all)")
      ->capture_default_str();
  load->add_option("--bridge", s.bridge_id, "bridge identity; without it no bridge fetches");
  load->add_option("--bridge-key-file", s.bridge_key_file,
                   "bridge root key file (kms-provision bridge add --out); its header gives the "
                   "deployment's profile")
      ->check(CLI::ExistingFile);
  load->add_option("--cert", s.bridge_cert, "bridge client certificate (PEM)")
      ->check(CLI::ExistingFile);
  load->add_option("--cert-key", s.bridge_cert_key, "its private key (PEM)")
      ->check(CLI::ExistingFile);
  load->add_option("--personalisation-key-file", s.personalisation_key_file,
                   "personalisation key (hex) when the bridge key file is wrapped under it");
  load->add_option("--profile", s.profile,
                   "the deployment's token profile (default: the bridge key file's header; "
                   "kms-provision --json status prints it)")
      ->check(CLI::IsMember({"aes-ecb-sha256", "sp800-108-cmac"}));
  load->add_option("--suite", s.suite, "SRTP suite id (1 or 2)")->capture_default_str();
  load->add_option("--connections", s.options.connections, "concurrent connections")
      ->capture_default_str();
  load->add_option("--rate", s.options.rate,
                   "open loop: key requests per second (0: closed loop, for peak)")
      ->capture_default_str();
  load->add_option("--requests", s.options.max_requests, "stop after this many invitations")
      ->capture_default_str();
  load->add_option("--duration", s.duration, "stop starting conferences after this many seconds")
      ->capture_default_str();
  load->add_option("--min-members", s.options.min_members, "smallest conference, chair included")
      ->capture_default_str();
  load->add_option("--max-members", s.options.max_members, "largest conference")
      ->capture_default_str();
  load->add_option("--invalid-fraction", s.options.invalid_fraction,
                   "invitations followed by an invalid request (bad tag, replay, stale)")
      ->capture_default_str();
  load->add_option("--retransmit-fraction", s.options.retransmit_fraction,
                   "admitted invitations sent again byte for byte")
      ->capture_default_str();
  load->add_flag("--verify", s.options.verify, "open every response and release (client CPU)");
  load->add_flag("--json", s.json, "print the report as JSON");

  load->callback([settings] {
    Settings& s = *settings;
    int code = 2;
    try {
      LoadOptions& o = s.options;
      o.server = ServerUrl::parse(s.server);
      o.tls.ca_file = s.ca;
      o.tls.timeout = std::chrono::milliseconds(s.timeout_ms);
      o.bridge_tls = o.tls;
      o.bridge_tls.cert_file = s.bridge_cert;
      o.bridge_tls.key_file = s.bridge_cert_key;
      o.max_duration = std::chrono::duration<double>(s.duration);
      if (s.suite != 1 && s.suite != 2) throw CLI::ValidationError("--suite", "must be 1 or 2");
      o.suite = static_cast<client::Suite>(s.suite);
      std::string seed_hex = read_text(s.seed_file);
      seed_hex.erase(seed_hex.find_last_not_of(" \n\r\t") + 1);
      auto seed = kms::from_hex(seed_hex);
      OPENSSL_cleanse(seed_hex.data(), seed_hex.size());
      if (!seed || seed->size() != 32) {
        throw std::runtime_error(s.seed_file + ": not 64 hex digits");
      }
      o.subscriber_seed = client::Secret(*seed);
      OPENSSL_cleanse(seed->data(), seed->size());
      std::optional<client::Profile> file_profile;
      if (!s.bridge_id.empty()) {
        if (s.bridge_key_file.empty() || s.bridge_cert.empty() || s.bridge_cert_key.empty()) {
          throw CLI::ValidationError("--bridge", "needs --bridge-key-file, --cert and --cert-key");
        }
        RootKeyFile file = read_root_key_file(s.bridge_key_file, s.personalisation_key_file);
        o.bridge_id = s.bridge_id;
        o.bridge_key = std::move(file.key);
        o.bridge_key_version = file.key_version.value_or(1);
        file_profile = file.profile;
      }
      if (!s.profile.empty()) {
        o.profile = profile_named(s.profile);
      } else if (file_profile) {
        o.profile = *file_profile;
      } else {
        throw CLI::ValidationError("--profile",
                                   "give the deployment's profile (or a format 2 bridge key file)");
      }
      const LoadReport report = run_load(o);
      std::cout << (s.json ? report.to_json() : report.to_text()) << std::endl;
      code = report.unexpected_total() == 0 && report.key_requests_ok > 0 ? 0 : 1;
    } catch (const CLI::Error& error) {
      std::cerr << "kms-client load: " << error.get_name() << ": " << error.what() << "\n";
    } catch (const std::exception& error) {
      std::cerr << "kms-client load: " << error.what() << "\n";
    }
    std::cout.flush();
    std::exit(code);  // see the header: the subcommand ends the process
  });
}

}  // namespace kms::tools
