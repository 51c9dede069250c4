#pragma once
// POP3 command lines of the authorization state (RFC 1939, RFC 2449, RFC 2595,
// RFC 5034). Pure: no I/O.
#include <string_view>

namespace smtpguard::pop3 {

/// The commands the front handles before login; everything else is `other`.
enum class verb { capa, stls, user, pass, apop, auth, quit, other };

/// A parsed command line. Views point into the line passed to parse_command.
struct command {
  verb name = verb::other;
  std::string_view keyword;   ///< as sent
  std::string_view argument;  ///< everything after the first space (a password may hold spaces)
};

/// Splits a line (without CRLF) into keyword and argument; the keyword is
/// matched case-insensitively and ends at a space or the end of the line.
command parse_command(std::string_view line);

/// The name USER or APOP gives, for logs (empty for other commands).
std::string_view user_name(const command& cmd);

}  // namespace smtpguard::pop3
