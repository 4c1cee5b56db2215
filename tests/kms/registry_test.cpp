// The conference registry on both backends (SQLite, PostgreSQL): admission, retransmission
// vs replay, binding, expiry, purge, capacity, and durability across a reopen (a process
// restart).
#include <gtest/gtest.h>

#include <memory>

#include "kms/core/protocol.h"
#include "kms/core/stored_conference_registry.h"
#include "protocol_error_of.h"
#include "support/test_database.h"

namespace {

using kms::Admission;
using kms::AdmissionOutcome;
using kms::Bytes;
using kms::ErrorCode;
using kms::ProtocolError;

constexpr std::int64_t kNow = 1'800'000'000;

Bytes filled(std::uint8_t value, std::size_t size) { return Bytes(size, value); }

Admission admission(std::uint8_t chair_nonce, const std::string& responder,
                    std::uint8_t responder_nonce, std::uint8_t request) {
  Admission a;
  a.chair_id = "sip:alice@ims.example.net";
  a.chair_nonce = hsm::SecureBytes(filled(chair_nonce, 32));
  a.conference_id = kms::protocol::conference_id(a.chair_id, a.chair_nonce.view());
  a.chair_key_id = kms::protocol::key_id(a.conference_id, a.chair_id, a.chair_nonce.view());
  a.responder_id = responder;
  a.responder_nonce = hsm::SecureBytes(filled(responder_nonce, 32));
  a.responder_key_id = kms::protocol::key_id(a.conference_id, responder, a.responder_nonce.view());
  a.profile = 1;
  a.suite = 1;
  a.request_digest = filled(request, 32);
  a.envelopes[0] = {filled(static_cast<std::uint8_t>(request + 100), 32), kNow + 300};
  a.envelopes[1] = {filled(static_cast<std::uint8_t>(request + 200), 32), kNow + 300};
  a.now = kNow;
  a.conference_expires_at = kNow + 3600;
  return a;
}

using kmstest::error_of;

class RegistryTest : public ::testing::TestWithParam<testsupport::DatabaseBackend> {
 protected:
  void SetUp() override {
    KMS_REQUIRE_DATABASE(database);
    registry = kms::open_conference_registry(path);
  }
  testsupport::TestDatabase database{GetParam()};
  std::string path = database.url();
  std::unique_ptr<kms::StoredConferenceRegistry> registry;
  std::vector<AdmissionOutcome> hooked;
  kms::ConferenceRegistry::AdmissionHook hook = [this](AdmissionOutcome o) { hooked.push_back(o); };
  kms::ConferenceRegistry::ReleaseHook no_release_hook = [](const kms::Conference&) {};

  std::size_t members(const Bytes& conf) {
    auto c = registry->find(conf);
    return c ? c->members.size() : 0;
  }
};

TEST_P(RegistryTest, AdmitsAndRecordsNoncesAndKeyIds) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  EXPECT_EQ(registry->admit(a, hook), AdmissionOutcome::admitted);
  const auto conference = registry->find(a.conference_id);
  ASSERT_TRUE(conference);
  EXPECT_EQ(conference->chair_id, a.chair_id);
  EXPECT_EQ(conference->suite, 1);
  EXPECT_EQ(conference->expires_at, kNow + 3600);
  EXPECT_FALSE(conference->bridge_id);
  ASSERT_EQ(conference->members.size(), 2u);
  EXPECT_EQ(conference->members[0].role, 1);
  EXPECT_EQ(conference->members[0].member_id, a.chair_id);
  EXPECT_TRUE(hsm::equal_constant_time(conference->members[0].nonce.view(), a.chair_nonce.view()));
  EXPECT_EQ(conference->members[0].key_id, a.chair_key_id);
  EXPECT_EQ(conference->members[1].role, 2);
  EXPECT_EQ(conference->members[1].member_id, "sip:bob@ims.example.net");
  EXPECT_EQ(conference->members[1].key_id, a.responder_key_id);
  EXPECT_EQ(hooked, std::vector<AdmissionOutcome>{AdmissionOutcome::admitted});
  EXPECT_EQ(registry->replay_entries(), 2u);
}

TEST_P(RegistryTest, IdenticalRequestIsARetransmissionAndChangesNothing) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(a, hook);
  EXPECT_EQ(registry->admit(a, hook), AdmissionOutcome::retransmission);
  EXPECT_EQ(members(a.conference_id), 2u);
  EXPECT_EQ(registry->replay_entries(), 2u);
  EXPECT_EQ(hooked.back(), AdmissionOutcome::retransmission);
}

TEST_P(RegistryTest, EnvelopeReusedInAnotherRequestIsAReplay) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(a, hook);
  Admission replayed = admission(1, "sip:carol@ims.example.net", 3, 2);
  replayed.envelopes[0] = a.envelopes[0];  // the chair's envelope again
  EXPECT_EQ(error_of([&] { registry->admit(replayed, hook); }), ErrorCode::replay);
  EXPECT_EQ(members(a.conference_id), 2u);
  EXPECT_EQ(hooked.size(), 1u);
}

TEST_P(RegistryTest, FailedHookRecordsNothing) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  EXPECT_THROW(registry->admit(a, [](AdmissionOutcome) { throw std::runtime_error("audit"); }),
               std::runtime_error);
  EXPECT_FALSE(registry->find(a.conference_id));
  EXPECT_EQ(registry->replay_entries(), 0u);
  EXPECT_EQ(registry->admit(a, hook), AdmissionOutcome::admitted);  // not a replay
}

TEST_P(RegistryTest, LaterMembersJoinAndReadmissionReplacesTheNonce) {
  const Admission b = admission(1, "sip:bob@ims.example.net", 2, 1);
  const Admission c = admission(1, "tel:+15551234567", 3, 2);
  registry->admit(b, hook);
  registry->admit(c, hook);
  EXPECT_EQ(members(b.conference_id), 3u);
  const Admission b_again = admission(1, "sip:bob@ims.example.net", 9, 3);
  EXPECT_EQ(registry->admit(b_again, hook), AdmissionOutcome::admitted);
  const auto conference = registry->find(b.conference_id);
  ASSERT_EQ(conference->members.size(), 3u);
  EXPECT_EQ(conference->members[1].member_id, "tel:+15551234567");
  EXPECT_EQ(conference->members[2].member_id, "sip:bob@ims.example.net");
  EXPECT_EQ(conference->members[2].nonce[0], 9);
}

TEST_P(RegistryTest, SuiteIsFixedByTheFirstAdmission) {
  registry->admit(admission(1, "sip:bob@ims.example.net", 2, 1), hook);
  Admission other_suite = admission(1, "tel:+15551234567", 3, 2);
  other_suite.suite = 2;
  EXPECT_EQ(error_of([&] { registry->admit(other_suite, hook); }), ErrorCode::suite_mismatch);
  EXPECT_EQ(members(other_suite.conference_id), 2u);
}

TEST_P(RegistryTest, ExpiredConferenceAdmitsAndReleasesNothing) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(a, hook);
  Admission late = admission(1, "tel:+15551234567", 3, 2);
  late.now = kNow + 3600;
  EXPECT_EQ(error_of([&] { registry->admit(late, hook); }), ErrorCode::conference_expired);
  EXPECT_EQ(error_of([&] {
              registry->bind_for_release(a.conference_id, "sip:bridge1@conf.example.net",
                                         kNow + 3600, no_release_hook);
            }),
            ErrorCode::conference_expired);
  EXPECT_FALSE(registry->find(a.conference_id)->bridge_id);
}

TEST_P(RegistryTest, FirstBridgeBindsTheConference) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(a, hook);
  EXPECT_EQ(error_of([&] {
              registry->bind_for_release(filled(7, 16), "sip:bridge1@conf.example.net", kNow,
                                         no_release_hook);
            }),
            ErrorCode::unknown_conference);
  // A release that fails before commit does not bind.
  EXPECT_THROW(
      registry->bind_for_release(a.conference_id, "sip:bridge2@conf.example.net", kNow,
                                 [](const kms::Conference&) { throw std::runtime_error("x"); }),
      std::runtime_error);
  EXPECT_FALSE(registry->find(a.conference_id)->bridge_id);
  const kms::Conference bound = registry->bind_for_release(
      a.conference_id, "sip:bridge1@conf.example.net", kNow, no_release_hook);
  EXPECT_EQ(bound.bridge_id, "sip:bridge1@conf.example.net");
  EXPECT_EQ(bound.members.size(), 2u);
  EXPECT_NO_THROW(registry->bind_for_release(a.conference_id, "sip:bridge1@conf.example.net",
                                             kNow + 1, no_release_hook));
  EXPECT_EQ(error_of([&] {
              registry->bind_for_release(a.conference_id, "sip:bridge2@conf.example.net", kNow,
                                         no_release_hook);
            }),
            ErrorCode::bridge_not_authorized);
}

TEST_P(RegistryTest, SurvivesReopen) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(a, hook);
  registry->bind_for_release(a.conference_id, "sip:bridge1@conf.example.net", kNow,
                             no_release_hook);
  registry.reset();
  registry = kms::open_conference_registry(path);
  const auto conference = registry->find(a.conference_id);
  ASSERT_TRUE(conference);
  EXPECT_EQ(conference->members.size(), 2u);
  EXPECT_EQ(conference->bridge_id, "sip:bridge1@conf.example.net");
  EXPECT_TRUE(
      hsm::equal_constant_time(conference->members[1].nonce.view(), a.responder_nonce.view()));
  // The replay record is durable too.
  Admission replayed = admission(1, "tel:+15551234567", 3, 2);
  replayed.envelopes[1] = a.envelopes[1];
  EXPECT_EQ(error_of([&] { registry->admit(replayed, hook); }), ErrorCode::replay);
  EXPECT_EQ(registry->admit(a, hook), AdmissionOutcome::retransmission);
}

TEST_P(RegistryTest, PurgeDeletesExpiredConferencesAfterRetention) {
  const Admission a = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(a, hook);
  EXPECT_EQ(registry->purge_expired(kNow + 3600), 0u);  // expired, but within retention
  EXPECT_TRUE(registry->find(a.conference_id));
  EXPECT_EQ(registry->replay_entries(), 0u);  // windows passed long ago
  EXPECT_EQ(registry->purge_expired(kNow + 3600 + 3600), 1u);
  EXPECT_FALSE(registry->find(a.conference_id));
}

TEST_P(RegistryTest, AdmissionsPurgeExpiredConferencesPeriodically) {
  const Admission old_conference = admission(1, "sip:bob@ims.example.net", 2, 1);
  registry->admit(old_conference, hook);
  Admission later = admission(5, "sip:bob@ims.example.net", 6, 2);
  later.now = kNow + 3600 + 3600;  // old_conference expired and past retention
  later.conference_expires_at = later.now + 3600;
  registry->admit(later, hook);
  EXPECT_FALSE(registry->find(old_conference.conference_id));
  EXPECT_TRUE(registry->find(later.conference_id));
}

TEST_P(RegistryTest, FullReplayRecordRefusesRatherThanForgets) {
  registry.reset();
  kms::RegistryOptions options;
  options.replay_capacity = 3;
  registry = kms::open_conference_registry(path, options);
  registry->admit(admission(1, "sip:bob@ims.example.net", 2, 1), hook);
  const Admission c = admission(1, "tel:+15551234567", 3, 2);
  EXPECT_EQ(error_of([&] { registry->admit(c, hook); }), ErrorCode::overloaded);
  EXPECT_EQ(members(c.conference_id), 2u);
  Admission later = c;
  later.now = kNow + 301;  // the first request's entries have expired
  later.conference_expires_at = kNow + 3600;
  later.envelopes[0].expires_at = kNow + 601;
  later.envelopes[1].expires_at = kNow + 601;
  EXPECT_EQ(registry->admit(later, hook), AdmissionOutcome::admitted);
}

TEST_P(RegistryTest, SharesTheDatabaseWithOtherTablesAndInstances) {
  // The key store's database may be the same file or server: the registry only touches its
  // tables. A second instance (a second connection, or another node) sees the first's writes.
  registry.reset();
  {
    const auto first = kms::open_conference_registry(path);
    const auto second = kms::open_conference_registry(path);
    first->admit(admission(1, "sip:bob@ims.example.net", 2, 1), hook);
    EXPECT_EQ(
        second->find(admission(1, "sip:bob@ims.example.net", 2, 1).conference_id)->members.size(),
        2u);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryTest, KMS_DATABASE_BACKENDS);

}  // namespace
