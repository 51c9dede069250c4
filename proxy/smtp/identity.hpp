#pragma once
// Telling a backend who the client is: XCLIENT (Postfix) and MAIL AUTH=
// (RFC 4954 section 5), whose values are xtext (RFC 3461 section 4).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace smtpguard::smtp {

/// RFC 3461 xtext: "+" followed by two upper-case hex digits for "+", "=",
/// and every octet outside "!" to "~".
std::string xtext(std::string_view value);

/// What smtpguard knows about the client of a session.
struct client_identity {
  std::string ip;  ///< literal address
  std::uint16_t port = 0;
  std::string local_ip;  ///< the address the client connected to
  std::uint16_t local_port = 0;
  std::string helo;  ///< its EHLO/HELO argument
  bool esmtp = true;  ///< EHLO rather than HELO
  std::string user;  ///< authenticated user; empty when none
};

/// The XCLIENT command line (without CRLF) carrying the attributes the
/// backend listed in its EHLO (`offered`, upper-case), or "" when it offers
/// none that we know. The client's name is sent as [UNAVAILABLE]: smtpguard
/// does no reverse lookup, and Postfix then does its own.
std::string build_xclient(const client_identity& client, const std::vector<std::string>& offered);

}  // namespace smtpguard::smtp
