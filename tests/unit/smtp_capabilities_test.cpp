#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "smtp/capabilities.hpp"

namespace smtpguard::smtp {
namespace {

TEST(smtp_capabilities, parse_postfix_style_ehlo) {
  const reply ehlo{250,
                   {"mail.example.org", "PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS",
                    "AUTH PLAIN login", "AUTH=PLAIN LOGIN CRAM-MD5", "ENHANCEDSTATUSCODES", "8BITMIME",
                    "DSN", "SMTPUTF8", "CHUNKING", "XCLIENT NAME addr PROTO HELO"}};
  const capabilities caps = parse_ehlo(ehlo);
  EXPECT_TRUE(caps.pipelining);
  EXPECT_TRUE(caps.size);
  EXPECT_EQ(caps.size_limit, 10240000u);
  EXPECT_TRUE(caps.starttls);
  EXPECT_TRUE(caps.enhanced_status_codes);
  EXPECT_TRUE(caps.eightbitmime);
  EXPECT_TRUE(caps.dsn);
  EXPECT_TRUE(caps.smtputf8);
  EXPECT_TRUE(caps.chunking);
  EXPECT_TRUE(caps.xclient);
  EXPECT_EQ(caps.xclient_attributes, (std::vector<std::string>{"NAME", "ADDR", "PROTO", "HELO"}));
  EXPECT_EQ(caps.auth_mechanisms, (std::vector<std::string>{"PLAIN", "LOGIN", "CRAM-MD5"}));
}

TEST(smtp_capabilities, keywords_are_case_insensitive_and_greeting_is_skipped) {
  const reply ehlo{250, {"PIPELINING greeting is not a keyword", "size", "8bitmime", "auth=cram-md5"}};
  const capabilities caps = parse_ehlo(ehlo);
  EXPECT_FALSE(caps.pipelining);
  EXPECT_TRUE(caps.size);
  EXPECT_EQ(caps.size_limit, 0u);
  EXPECT_TRUE(caps.eightbitmime);
  EXPECT_EQ(caps.auth_mechanisms, (std::vector<std::string>{"CRAM-MD5"}));
}

TEST(smtp_capabilities, malformed_size_is_no_limit) {
  EXPECT_EQ(parse_ehlo(reply{250, {"h", "SIZE 12x"}}).size_limit, 0u);
  EXPECT_EQ(parse_ehlo(reply{250, {"h", "SIZE -1"}}).size_limit, 0u);
  EXPECT_EQ(parse_ehlo(reply{250, {"h", "SIZE 99999999999999999999999"}}).size_limit, 0u);
  EXPECT_FALSE(parse_ehlo(reply{250, {"h", "SIZEX 10"}}).size);
}

TEST(smtp_capabilities, build_full_offer) {
  capabilities backend;
  backend.eightbitmime = backend.smtputf8 = backend.dsn = true;
  backend.chunking = backend.xclient = backend.starttls = true;
  backend.auth_mechanisms = {"GSSAPI"};
  backend.size = true;
  backend.size_limit = 5000;
  const ehlo_offer offer{"mx.example.org", "client.example", true, {"PLAIN", "LOGIN"}, 10000};
  EXPECT_EQ(build_ehlo_reply(backend, offer).serialize(),
            "250-mx.example.org Hello client.example\r\n"
            "250-PIPELINING\r\n"
            "250-SIZE 5000\r\n"
            "250-8BITMIME\r\n"
            "250-SMTPUTF8\r\n"
            "250-DSN\r\n"
            "250-ENHANCEDSTATUSCODES\r\n"
            "250-STARTTLS\r\n"
            "250 AUTH PLAIN LOGIN\r\n");
}

TEST(smtp_capabilities, build_minimal_offer) {
  const ehlo_offer offer{"mx.example.org", "c", false, {}, 0};
  EXPECT_EQ(build_ehlo_reply(capabilities{}, offer).serialize(),
            "250-mx.example.org Hello c\r\n"
            "250-PIPELINING\r\n"
            "250-SIZE\r\n"
            "250 ENHANCEDSTATUSCODES\r\n");
}

TEST(smtp_capabilities, size_choice) {
  struct size_case {
    std::uint64_t ours, theirs;
    std::string line;
  };
  const std::vector<size_case> cases{
      {0, 0, "SIZE"}, {100, 0, "SIZE 100"}, {0, 200, "SIZE 200"}, {100, 200, "SIZE 100"}, {300, 200, "SIZE 200"}};
  for (const auto& c : cases) {
    capabilities backend;
    backend.size_limit = c.theirs;
    const ehlo_offer offer{"h", "c", false, {}, c.ours};
    EXPECT_EQ(build_ehlo_reply(backend, offer).lines.at(2), c.line) << c.ours << " " << c.theirs;
  }
}

TEST(smtp_capabilities, greeting_never_carries_control_characters) {
  const ehlo_offer offer{"h", "evil\r\n250 x", false, {}, 0};
  EXPECT_EQ(build_ehlo_reply(capabilities{}, offer).lines.front(), "h Hello evil250x");
}

}  // namespace
}  // namespace smtpguard::smtp
