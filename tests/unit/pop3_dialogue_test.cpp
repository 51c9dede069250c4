#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pop3/dialogue.hpp"
#include "pop3/replies.hpp"

namespace smtpguard::pop3 {
namespace {

struct row {
  std::string line;
  effect what;
  std::string_view reply = {};
  bool counts_as_error = false;
};

void expect(const dialogue_state& state, const dialogue_policy& policy, const std::vector<row>& rows) {
  for (const auto& r : rows) {
    const decision d = decide(state, policy, parse_command(r.line));
    EXPECT_EQ(d.what, r.what) << r.line;
    EXPECT_EQ(d.reply, r.reply) << r.line;
    EXPECT_EQ(d.counts_as_error, r.counts_as_error) << r.line;
  }
}

TEST(pop3_dialogue, stls_listener_before_tls_refuses_every_login) {
  expect({.tls = false}, {.stls_listener = true},
         {
             {"CAPA", effect::capa},
             {"STLS", effect::start_tls, replies::stls_ready},
             {"USER alice", effect::reply, replies::login_needs_tls, true},
             {"PASS secret", effect::reply, replies::login_needs_tls, true},
             {"APOP alice 0123", effect::reply, replies::login_needs_tls, true},
             {"AUTH PLAIN", effect::reply, replies::login_needs_tls, true},
             {"AUTH", effect::reply, replies::login_needs_tls, true},
             {"QUIT", effect::quit},
             {"STAT", effect::reply, replies::unknown_command, true},
         });
}

TEST(pop3_dialogue, over_tls_logins_go_to_the_backend) {
  for (const bool stls_listener : {true, false}) {
    expect({.tls = true}, {.stls_listener = stls_listener},
           {
               {"CAPA", effect::capa},
               {"STLS", effect::reply, replies::tls_active, true},
               {"USER alice", effect::forward},
               {"PASS secret", effect::login},
               {"APOP alice 0123", effect::login},
               {"AUTH PLAIN", effect::auth},
               {"AUTH PLAIN AGFsaWNlAHNlY3JldA==", effect::auth},
               {"AUTH", effect::list_mechanisms},
               {"AUTH SCRAM-SHA-256-PLUS", effect::reply, replies::mechanism_unavailable, true},
               {"QUIT", effect::quit},
               {"LIST", effect::reply, replies::unknown_command, true},
               {"NOOP", effect::reply, replies::unknown_command, true},
           });
  }
}

}  // namespace
}  // namespace smtpguard::pop3
