#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pop3/capabilities.hpp"
#include "pop3/command.hpp"
#include "pop3/response.hpp"

namespace smtpguard::pop3 {
namespace {

TEST(pop3_command, keywords_match_in_any_case_and_keep_the_whole_argument) {
  struct row {
    std::string line;
    verb name;
    std::string argument;
  };
  const std::vector<row> rows{
      {"CAPA", verb::capa, ""},
      {"capa", verb::capa, ""},
      {"StLs", verb::stls, ""},
      {"USER alice", verb::user, "alice"},
      {"PASS two words ", verb::pass, "two words "},  // RFC 1939 allows spaces in a password
      {"APOP alice c4c9334bac560ecc979e58001b3e22fb", verb::apop, "alice c4c9334bac560ecc979e58001b3e22fb"},
      {"AUTH PLAIN AGFsaWNlAHNlY3JldA==", verb::auth, "PLAIN AGFsaWNlAHNlY3JldA=="},
      {"AUTH", verb::auth, ""},
      {"QUIT", verb::quit, ""},
      {"STAT", verb::other, ""},
      {"USERX alice", verb::other, "alice"},
      {"", verb::other, ""},
      {" USER alice", verb::other, "USER alice"},
  };
  for (const auto& r : rows) {
    const command cmd = parse_command(r.line);
    EXPECT_EQ(cmd.name, r.name) << r.line;
    EXPECT_EQ(cmd.argument, r.argument) << r.line;
  }
}

TEST(pop3_command, user_name_comes_from_user_and_apop_only) {
  EXPECT_EQ(user_name(parse_command("USER alice")), "alice");
  EXPECT_EQ(user_name(parse_command("APOP bob 0123456789abcdef")), "bob");
  EXPECT_EQ(user_name(parse_command("PASS alice")), "");
  EXPECT_EQ(user_name(parse_command("AUTH PLAIN")), "");
}

TEST(pop3_response, status_lines_are_classified_strictly) {
  struct row {
    std::string line;
    status expected;
  };
  const std::vector<row> rows{
      {"+OK", status::ok},
      {"+OK Dovecot ready. <1.2@host>", status::ok},
      {"-ERR", status::err},
      {"-ERR [AUTH] Authentication failed.", status::err},
      {"+ ", status::continuation},
      {"+", status::continuation},
      {"+ dXNlcm5hbWU6", status::continuation},
      {"+OKAY", status::invalid},
      {"-ERROR", status::invalid},
      {"OK", status::invalid},
      {"", status::invalid},
      {"+OK bad\x01", status::invalid},
      {std::string("+OK nul\0x", 9), status::invalid},
      {"+OK tab\tok", status::ok},
      {"+OK " + std::string(505, 'x'), status::ok},
      {"+OK " + std::string(507, 'x'), status::invalid},
      {"+ " + std::string(4000, 'A'), status::continuation},
  };
  for (const auto& r : rows) EXPECT_EQ(classify(r.line), r.expected) << r.line.substr(0, 40);
  EXPECT_TRUE(ends_multiline("."));
  EXPECT_FALSE(ends_multiline(".."));
}

TEST(pop3_capabilities, before_tls_only_stls_and_no_way_to_log_in) {
  const std::vector<std::string> backend{"CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE",
                                         "USER", "SASL PLAIN LOGIN", "STLS"};
  EXPECT_EQ(filter_capabilities(backend, {.stls = true, .login = false}),
            (std::vector<std::string>{"CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS"}));
}

TEST(pop3_capabilities, over_tls_login_but_never_the_backends_stls_or_channel_binding) {
  const std::vector<std::string> backend{"stls", "User", "SASL PLAIN SCRAM-SHA-256-PLUS SCRAM-SHA-256 LOGIN",
                                         "IMPLEMENTATION Dovecot"};
  EXPECT_EQ(filter_capabilities(backend, {.stls = false, .login = true}),
            (std::vector<std::string>{"User", "SASL PLAIN SCRAM-SHA-256 LOGIN", "IMPLEMENTATION Dovecot"}));
  // A SASL line with nothing left is no SASL line.
  EXPECT_EQ(filter_capabilities({"SASL SCRAM-SHA-1-PLUS"}, {.stls = false, .login = true}),
            std::vector<std::string>{});
}

TEST(pop3_capabilities, plus_mechanisms_do_not_pass) {
  EXPECT_TRUE(mechanism_passes("PLAIN"));
  EXPECT_TRUE(mechanism_passes("SCRAM-SHA-256"));
  EXPECT_FALSE(mechanism_passes("SCRAM-SHA-256-PLUS"));
  EXPECT_FALSE(mechanism_passes("scram-sha-1-plus"));
  EXPECT_TRUE(mechanism_passes("PLUS"));
}

}  // namespace
}  // namespace smtpguard::pop3
