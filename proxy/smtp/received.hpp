#pragma once
// The trace header smtpguard prepends (RFC 5321 section 4.4, RFC 3848).
#include <ctime>
#include <string>
#include <string_view>

namespace smtpguard::smtp {

struct received_info {
  std::string_view helo;         ///< client's EHLO/HELO argument (sanitised here)
  std::string_view client_ip;    ///< "192.0.2.1" or "2001:db8::1"
  std::string_view by_host;      ///< our hostname
  std::string_view protocol;     ///< "ESMTPSA", "ESMTPA", "ESMTPS", "ESMTP", "SMTP"...
  std::string_view id;           ///< session id
  std::string_view tls_version;  ///< "TLSv1.3"; empty without TLS
  std::string_view tls_cipher;   ///< "TLS_AES_128_GCM_SHA256"
  std::string_view client_certificate;  ///< verified client certificate subject; empty if none
  std::string_view user;         ///< authenticated user; empty if none
  std::string_view recipient;    ///< only when the message has exactly one recipient
  std::time_t when = 0;
};

/// The "with" clause's protocol: ESMTP after EHLO, with RFC 3848's "S" for
/// TLS and "A" for an authenticated client (ESMTPSA); SMTP after HELO, with
/// "S" for TLS (no "A": RFC 3848 names no authenticated HELO protocol).
std::string_view received_protocol(bool extended, bool tls, bool authenticated);

/// Builds a folded header, every line ending in CRLF, for example:
///   Received: from client.example ([192.0.2.1])\r\n
///   \tby mail.example.org (smtpguard) with ESMTPSA id 3f2a9c\r\n
///   \t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n
///   \t(client certificate CN=alice,O=Example)\r\n   (only with a verified one)
///   \t(authenticated user alice)\r\n
///   \tfor <bob@example.net>; Sun, 22 Nov 2026 19:00:00 +0000\r\n
/// Optional parts are left out when empty. Client-controlled text (helo, user)
/// is reduced to printable ASCII without parentheses, backslashes or semicolons.
std::string build_received_header(const received_info& info);

}  // namespace smtpguard::smtp
