#include <gtest/gtest.h>

#include <string>

#include "smtp/received.hpp"

namespace smtpguard::smtp {
namespace {

// Sun, 22 Nov 2026 19:00:00 UTC.
constexpr std::time_t example_time = 1795374000;

TEST(smtp_received, full_example) {
  received_info info;
  info.helo = "client.example";
  info.client_ip = "192.0.2.1";
  info.by_host = "mail.example.org";
  info.protocol = "ESMTPSA";
  info.id = "3f2a9c";
  info.tls_version = "TLSv1.3";
  info.tls_cipher = "TLS_AES_128_GCM_SHA256";
  info.user = "alice";
  info.recipient = "bob@example.net";
  info.when = example_time;
  EXPECT_EQ(build_received_header(info),
            "Received: from client.example ([192.0.2.1])\r\n"
            "\tby mail.example.org (smtpguard) with ESMTPSA id 3f2a9c\r\n"
            "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n"
            "\t(authenticated user alice)\r\n"
            "\tfor <bob@example.net>; Sun, 22 Nov 2026 19:00:00 +0000\r\n");
}

TEST(smtp_received, minimal_without_tls_user_or_recipient) {
  received_info info;
  info.client_ip = "2001:db8::1";
  info.by_host = "mail.example.org";
  info.protocol = "ESMTP";
  info.id = "1";
  info.when = 0;
  EXPECT_EQ(build_received_header(info),
            "Received: from unknown ([IPv6:2001:db8::1])\r\n"
            "\tby mail.example.org (smtpguard) with ESMTP id 1; Thu, 1 Jan 1970 00:00:00 +0000\r\n");
}

TEST(smtp_received, date_follows_last_clause) {
  received_info info;
  info.helo = "h";
  info.client_ip = "192.0.2.1";
  info.by_host = "m";
  info.protocol = "ESMTPA";
  info.id = "x";
  info.user = "alice";
  info.when = 951782400;  // 2000-02-29, a leap day
  EXPECT_EQ(build_received_header(info),
            "Received: from h ([192.0.2.1])\r\n"
            "\tby m (smtpguard) with ESMTPA id x\r\n"
            "\t(authenticated user alice); Tue, 29 Feb 2000 00:00:00 +0000\r\n");
}

TEST(smtp_received, client_text_is_sanitised) {
  received_info info;
  info.helo = "evil) (by forged\r\nX-Injected: yes; \\x";
  info.client_ip = "192.0.2.1";
  info.by_host = "m";
  info.protocol = "ESMTPA";
  info.id = "x";
  info.user = "a(b)c;d e\te\xc3\xa9";
  info.when = example_time;
  const std::string header = build_received_header(info);
  EXPECT_EQ(header,
            "Received: from evilbyforgedX-Injected:yesx ([192.0.2.1])\r\n"
            "\tby m (smtpguard) with ESMTPA id x\r\n"
            "\t(authenticated user abcdee); Sun, 22 Nov 2026 19:00:00 +0000\r\n");
}

TEST(smtp_received, long_helo_is_truncated) {
  const std::string helo(1000, 'a');
  received_info info;
  info.helo = helo;
  info.client_ip = "192.0.2.1";
  info.by_host = "m";
  info.when = example_time;
  const std::string header = build_received_header(info);
  EXPECT_NE(header.find("from " + std::string(255, 'a') + " ("), std::string::npos);
  EXPECT_EQ(header.find(std::string(256, 'a')), std::string::npos);
}

TEST(smtp_received, protocol_names) {
  EXPECT_EQ(received_protocol(false, false, false), "SMTP");
  EXPECT_EQ(received_protocol(false, true, false), "SMTPS");
  EXPECT_EQ(received_protocol(false, true, true), "SMTPS");
  EXPECT_EQ(received_protocol(true, false, false), "ESMTP");
  EXPECT_EQ(received_protocol(true, true, false), "ESMTPS");
  EXPECT_EQ(received_protocol(true, false, true), "ESMTPA");
  EXPECT_EQ(received_protocol(true, true, true), "ESMTPSA");
}

}  // namespace
}  // namespace smtpguard::smtp

namespace smtpguard::smtp {
namespace {

TEST(smtp_received_certificate, verified_client_certificate_has_its_own_comment) {
  received_info info;
  info.helo = "client.example";
  info.client_ip = "192.0.2.1";
  info.by_host = "mail.example.org";
  info.protocol = "ESMTPSA";
  info.client_certificate = "CN=alice (x);O=Example Org";
  info.user = "alice";
  const std::string header = build_received_header(info);
  EXPECT_NE(header.find("\r\n\t(client certificate CN=alice xO=Example Org)\r\n\t(authenticated user alice)"),
            std::string::npos)
      << header;
}

}  // namespace
}  // namespace smtpguard::smtp
