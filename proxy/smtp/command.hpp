#pragma once
// Client command parsing (RFC 5321 section 4.1). Pure: no I/O.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smtpguard::smtp {

/// Commands smtpguard knows; everything else is `unknown`.
enum class verb { helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit, vrfy, expn, help, starttls, auth, unknown };

/// A parsed command line. Views point into the line passed to parse_command.
struct command {
  verb name = verb::unknown;
  std::string_view keyword;   ///< the verb as sent by the client
  std::string_view argument;  ///< text after the verb and its separating space(s), trailing spaces removed
};

/// Splits a line (without CRLF) into verb and argument; the verb is matched
/// case-insensitively and must be followed by a space or the end of the line.
command parse_command(std::string_view line);

/// One ESMTP parameter of MAIL or RCPT ("SIZE=1000", "BODY=8BITMIME", "SMTPUTF8").
struct mail_parameter {
  std::string keyword;  ///< upper-cased
  std::string value;    ///< empty when has_value is false
  bool has_value = false;
};

/// The argument of MAIL FROM: / RCPT TO: after parsing.
struct path_argument {
  std::string mailbox;  ///< "local@domain" without brackets and source route; empty for "<>"
  std::vector<mail_parameter> parameters;
  bool has_8bit = false;  ///< mailbox contains octets >= 0x80 (needs SMTPUTF8)
};

/// Parses "FROM:<a@b.c> SIZE=10". Accepts "FROM: <a@b.c>" (one space after the
/// colon, as Postfix does) and strips an RFC 5321 source route. Returns nullopt
/// on syntax errors: missing brackets, control characters, spaces in the path,
/// malformed parameters, a mailbox without a domain (except <> for MAIL).
std::optional<path_argument> parse_mail_from(std::string_view argument);
/// Parses "TO:<a@b.c> NOTIFY=NEVER"; "<postmaster>" (any case) is allowed
/// without a domain, "<>" is not.
std::optional<path_argument> parse_rcpt_to(std::string_view argument);

/// Canonical forms forwarded to the backend, so it acts on exactly what we checked:
/// "MAIL FROM:<mailbox> PARAM=VALUE ..." and "RCPT TO:<mailbox> ..." (no CRLF).
std::string format_mail_from(const path_argument& path);
std::string format_rcpt_to(const path_argument& path);

}  // namespace smtpguard::smtp
