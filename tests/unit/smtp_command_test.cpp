#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "smtp/command.hpp"

namespace smtpguard::smtp {
namespace {

struct command_case {
  std::string line;
  verb name;
  std::string keyword;
  std::string argument;
};

TEST(smtp_command, verbs_and_arguments) {
  const std::vector<command_case> cases{
      {"EHLO client.example", verb::ehlo, "EHLO", "client.example"},
      {"helo x", verb::helo, "helo", "x"},
      {"MaIl FROM:<a@b.c>", verb::mail, "MaIl", "FROM:<a@b.c>"},
      {"RCPT TO:<a@b.c>   ", verb::rcpt, "RCPT", "TO:<a@b.c>"},
      {"DATA", verb::data, "DATA", ""},
      {"BDAT 10 LAST", verb::bdat, "BDAT", "10 LAST"},
      {"RSET", verb::rset, "RSET", ""},
      {"NOOP  hello  ", verb::noop, "NOOP", "hello"},
      {"QUIT", verb::quit, "QUIT", ""},
      {"VRFY bob", verb::vrfy, "VRFY", "bob"},
      {"EXPN list", verb::expn, "EXPN", "list"},
      {"HELP", verb::help, "HELP", ""},
      {"starttls", verb::starttls, "starttls", ""},
      {"AUTH PLAIN dGVzdA==", verb::auth, "AUTH", "PLAIN dGVzdA=="},
      {"MAILX FROM:<a@b.c>", verb::unknown, "MAILX", "FROM:<a@b.c>"},
      {"MAIL:FROM", verb::unknown, "MAIL:FROM", ""},
      {"MAI", verb::unknown, "MAI", ""},
      {"", verb::unknown, "", ""},
      {" NOOP", verb::unknown, "", "NOOP"},
      {"NOOP ", verb::noop, "NOOP", ""},
      {"EHLO\tx", verb::unknown, "EHLO\tx", ""},
  };
  for (const auto& c : cases) {
    const command cmd = parse_command(c.line);
    EXPECT_EQ(cmd.name, c.name) << c.line;
    EXPECT_EQ(cmd.keyword, c.keyword) << c.line;
    EXPECT_EQ(cmd.argument, c.argument) << c.line;
  }
}

struct path_case {
  std::string argument;
  bool ok;
  std::string canonical;  // format_* output when ok
  bool has_8bit = false;
};

TEST(smtp_command, mail_from) {
  const std::vector<path_case> cases{
      {"FROM:<alice@example.org>", true, "MAIL FROM:<alice@example.org>"},
      {"from:<alice@example.org>", true, "MAIL FROM:<alice@example.org>"},
      {"FROM: <alice@example.org>", true, "MAIL FROM:<alice@example.org>"},
      {"FROM:  <alice@example.org>", false, ""},
      {"FROM:<>", true, "MAIL FROM:<>"},
      {"FROM:<> SIZE=10", true, "MAIL FROM:<> SIZE=10"},
      {"FROM:<a@b.c> size=1000 body=8BITMIME smtputf8", true,
       "MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8"},
      {"FROM:<a@b.c> AUTH=<>", true, "MAIL FROM:<a@b.c> AUTH=<>"},
      {"FROM:<a@b.c> RET=HDRS ENVID=QQ314159", true, "MAIL FROM:<a@b.c> RET=HDRS ENVID=QQ314159"},
      {"FROM:<@relay.example,@r2.example:a@b.c>", true, "MAIL FROM:<a@b.c>"},
      {"FROM:<first.last+tag@sub.example.org>", true, "MAIL FROM:<first.last+tag@sub.example.org>"},
      {"FROM:<\"john doe\"@example.org>", true, "MAIL FROM:<\"john doe\"@example.org>"},
      {"FROM:<\"john\"@example.org>", true, "MAIL FROM:<john@example.org>"},
      {"FROM:<\"a\\\"b\"@example.org>", true, "MAIL FROM:<\"a\\\"b\"@example.org>"},
      {"FROM:<\"\\j\\o\"@example.org>", true, "MAIL FROM:<jo@example.org>"},
      {"FROM:<\"\"@example.org>", true, "MAIL FROM:<\"\"@example.org>"},
      {"FROM:<a@[192.0.2.1]>", true, "MAIL FROM:<a@[192.0.2.1]>"},
      {"FROM:<a@[IPv6:2001:db8::1]>", true, "MAIL FROM:<a@[IPv6:2001:db8::1]>"},
      {"FROM:<a@[IPv6:::ffff:192.0.2.1]>", true, "MAIL FROM:<a@[IPv6:::ffff:192.0.2.1]>"},
      {"FROM:<a@[IPv6:1:2:3:4:5:6:7:8]>", true, "MAIL FROM:<a@[IPv6:1:2:3:4:5:6:7:8]>"},
      {"FROM:<a@[x-tag:stuff]>", true, "MAIL FROM:<a@[x-tag:stuff]>"},
      {"FROM:<j\xc3\xb6rg@b\xc3\xbc.example>", true, "MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc.example>", true},
      // Rejected.
      {"FROM:a@b.c", false, ""},
      {"FROM:<a@b.c", false, ""},
      {"FROM:<a@b.c>x", false, ""},
      {"TO:<a@b.c>", false, ""},
      {"FROM <a@b.c>", false, ""},
      {"FROM:<a>", false, ""},
      {"FROM:<postmaster>", false, ""},
      {"FROM:<a@>", false, ""},
      {"FROM:<@b.c>", false, ""},
      {"FROM:<a b@c.d>", false, ""},
      {"FROM:<a..b@c.d>", false, ""},
      {"FROM:<.a@c.d>", false, ""},
      {"FROM:<a.@c.d>", false, ""},
      {"FROM:<a@-b.c>", false, ""},
      {"FROM:<a@b-.c>", false, ""},
      {"FROM:<a@b..c>", false, ""},
      {"FROM:<a@b.c.>", false, ""},
      {"FROM:<a@b_c.d>", false, ""},
      {"FROM:<a\r@b.c>", false, ""},
      {std::string("FROM:<a\0@b.c>", 13), false, ""},
      {"FROM:<a@b.c\n>", false, ""},
      {"FROM:<\"a\r\"@b.c>", false, ""},
      {"FROM:<\"unterminated@b.c>", false, ""},
      {"FROM:<a@[192.0.2.256]>", false, ""},
      {"FROM:<a@[192.0.2]>", false, ""},
      {"FROM:<a@[IPv6:1:2:3:4:5:6:7:8:9]>", false, ""},
      {"FROM:<a@[IPv6:1::2::3]>", false, ""},
      {"FROM:<a@[IPv6:12345::]>", false, ""},
      {"FROM:<a@[]>", false, ""},
      {"FROM:<@relay.example:>", false, ""},
      {"FROM:<@relay.example a@b.c>", false, ""},
      {"FROM:<j\xc3\x28@b.c>", false, ""},
      {"FROM:<a@b.c> SIZE=1 SIZE=2", false, ""},
      {"FROM:<a@b.c> size=1 SIZE=2", false, ""},
      {"FROM:<a@b.c> SIZE=", false, ""},
      {"FROM:<a@b.c> =1", false, ""},
      {"FROM:<a@b.c> -X=1", false, ""},
      {"FROM:<a@b.c> X_Y=1", false, ""},
      {"FROM:<a@b.c> X=a=b", false, ""},
      {"FROM:<a@b.c> X=\x01", false, ""},
      {"FROM:<a@b.c> X=\xc3\xa9", false, ""},
      {"FROM:<a@b.c>  SIZE=1", false, ""},
      {"FROM:<a@b.c> SIZE=1  BODY=7BIT", false, ""},
      {"FROM:<a@b.c> ", false, ""},
      {"FROM:<a@" + std::string(64, 'x') + "." + std::string(64, 'y') + ".example>", false, ""},
  };
  for (const auto& c : cases) {
    const auto parsed = parse_mail_from(c.argument);
    ASSERT_EQ(parsed.has_value(), c.ok) << testing::PrintToString(c.argument);
    if (!parsed) continue;
    EXPECT_EQ(format_mail_from(*parsed), c.canonical) << c.argument;
    EXPECT_EQ(parsed->has_8bit, c.has_8bit) << c.argument;
  }
}

TEST(smtp_command, parameters_are_split) {
  const auto parsed = parse_mail_from("FROM:<a@b.c> Size=42 SMTPUTF8");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->mailbox, "a@b.c");
  ASSERT_EQ(parsed->parameters.size(), 2u);
  EXPECT_EQ(parsed->parameters[0].keyword, "SIZE");
  EXPECT_EQ(parsed->parameters[0].value, "42");
  EXPECT_TRUE(parsed->parameters[0].has_value);
  EXPECT_EQ(parsed->parameters[1].keyword, "SMTPUTF8");
  EXPECT_FALSE(parsed->parameters[1].has_value);
}

TEST(smtp_command, rcpt_to) {
  const std::vector<path_case> cases{
      {"TO:<bob@example.net>", true, "RCPT TO:<bob@example.net>"},
      {"to: <bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net", true,
       "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net"},
      {"TO:<postmaster>", true, "RCPT TO:<postmaster>"},
      {"TO:<PostMaster>", true, "RCPT TO:<PostMaster>"},
      {"TO:<postmaster@example.net>", true, "RCPT TO:<postmaster@example.net>"},
      {"TO:<@a.example:bob@example.net>", true, "RCPT TO:<bob@example.net>"},
      {"TO:<>", false, ""},
      {"TO:<bob>", false, ""},
      {"TO:<\"postmaster\">", false, ""},
      {"FROM:<bob@example.net>", false, ""},
      {"TO:<bob@example.net>\t", false, ""},
  };
  for (const auto& c : cases) {
    const auto parsed = parse_rcpt_to(c.argument);
    ASSERT_EQ(parsed.has_value(), c.ok) << c.argument;
    if (parsed) {
      EXPECT_EQ(format_rcpt_to(*parsed), c.canonical) << c.argument;
    }
  }
}

TEST(smtp_command, path_length_limit) {
  // "<" + local + "@" + domain + ">" is at most 256 octets (RFC 5321 4.5.3.1.3).
  const auto path_of = [](std::size_t total) {
    const std::string domain = std::string(60, 'd') + "." + std::string(60, 'e') + "." + std::string(60, 'f');
    return "FROM:<" + std::string(total - 3 - domain.size(), 'l') + "@" + domain + ">";
  };
  EXPECT_TRUE(parse_mail_from(path_of(256)));
  EXPECT_FALSE(parse_mail_from(path_of(257)));
}

}  // namespace
}  // namespace smtpguard::smtp
