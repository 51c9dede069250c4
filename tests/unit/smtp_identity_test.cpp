#include "smtp/identity.hpp"

#include <gtest/gtest.h>

namespace smtpguard::smtp {
namespace {

TEST(smtp_identity, xtext_escapes_plus_equals_and_non_printables) {
  EXPECT_EQ(xtext("alice@example.org"), "alice@example.org");
  EXPECT_EQ(xtext("a+b=c"), "a+2Bb+3Dc");
  EXPECT_EQ(xtext("two words"), "two+20words");
  EXPECT_EQ(xtext(std::string("\x7f\x01\xe9", 3)), "+7F+01+E9");
  EXPECT_EQ(xtext("!~"), "!~");
  EXPECT_EQ(xtext(""), "");
}

client_identity sample() {
  client_identity c;
  c.ip = "192.0.2.7";
  c.port = 40123;
  c.local_ip = "198.51.100.1";
  c.local_port = 587;
  c.helo = "laptop.example";
  c.user = "alice@example.org";
  return c;
}

const std::vector<std::string> postfix_offer = {"NAME", "ADDR", "PROTO", "HELO", "REVERSE_NAME",
                                                "PORT", "LOGIN", "DESTADDR", "DESTPORT"};

TEST(smtp_identity, xclient_carries_what_the_backend_offers) {
  EXPECT_EQ(build_xclient(sample(), postfix_offer),
            "XCLIENT ADDR=192.0.2.7 PORT=40123 NAME=[UNAVAILABLE] HELO=laptop.example PROTO=ESMTP "
            "LOGIN=alice@example.org DESTADDR=198.51.100.1 DESTPORT=587");
  EXPECT_EQ(build_xclient(sample(), {"ADDR", "LOGIN"}), "XCLIENT ADDR=192.0.2.7 LOGIN=alice@example.org");
  EXPECT_EQ(build_xclient(sample(), {}), "");
  EXPECT_EQ(build_xclient(sample(), {"FOO"}), "");
}

TEST(smtp_identity, xclient_tags_ipv6_and_escapes_values) {
  client_identity c = sample();
  c.ip = "2001:db8::7";
  c.helo = "bad=helo name";
  c.user = "";
  c.esmtp = false;
  EXPECT_EQ(build_xclient(c, {"ADDR", "HELO", "PROTO", "LOGIN"}),
            "XCLIENT ADDR=IPV6:2001:db8::7 HELO=bad+3Dhelo+20name PROTO=SMTP");
}

}  // namespace
}  // namespace smtpguard::smtp
