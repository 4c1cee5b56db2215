// One kmsd for the tool tests: the tests/server fixture (a fresh SoftHSM token, test PKI,
// kAlice, kBob, kCarol and kBridgeId provisioned), started once per test program and
// stopped at its end. Plus running a tool and a UE's key request through kms-client.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kmsd_fixture.h"
#include "test_token.h"

namespace toolstest {

kmstest::KmsdEnvironment& environment();
kmstest::KmsdProcess& kmsd();

// Runs a tool (argv[0] its path); appends --server URL --ca CA (kmsd's) when `with_server`.
testsupport::CommandResult run(std::vector<std::string> argv, bool with_server = false);

// One key request through the kms-client binary: `chair` invites `invitee` (ue invite),
// the invitee sends the request to kmsd (ue request). Files are in `dir`; `extra` is added
// to both commands (e.g. --key-version). The state file is reused for every invitee.
struct Invitation {
  std::string state;     // the chair's R_A
  std::string envelope;  // E_A
  std::string relay;     // E_A(R_A, K1) and the conference id, for the chair
  std::string media;     // the invitee's media key
  testsupport::CommandResult invite, request;
};
Invitation invite(const std::string& dir, const std::string& chair, const std::string& invitee,
                  const std::vector<std::string>& extra = {});

// A fresh folder under the environment's for one test.
std::string test_dir();

// One line, ending in a newline.
inline bool one_line(const std::string& text) {
  return !text.empty() && text.find('\n') == text.size() - 1;
}

}  // namespace toolstest
