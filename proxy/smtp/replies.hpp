#pragma once
// Every reply smtpguard writes itself, in wire form, each with its RFC 3463
// enhanced status code. Backend replies are relayed, not taken from here.
#include <string_view>

namespace smtpguard::smtp::replies {

// RFC 5321 / RFC 3207 session and transaction replies.
inline constexpr std::string_view ok = "250 2.0.0 OK\r\n";
inline constexpr std::string_view bye = "221 2.0.0 Bye\r\n";
inline constexpr std::string_view ready_to_start_tls = "220 2.0.0 Ready to start TLS\r\n";
inline constexpr std::string_view vrfy_cannot =
    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n";
inline constexpr std::string_view help =
    "214-2.0.0 This is smtpguard, an authenticating SMTP relay\r\n"
    "214-2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY HELP QUIT\r\n"
    "214 2.0.0 See RFC 5321, RFC 3207 and RFC 4954\r\n";
inline constexpr std::string_view start_mail_input = "354 End data with <CR><LF>.<CR><LF>\r\n";

// RFC 4954 AUTH replies.
inline constexpr std::string_view auth_succeeded = "235 2.7.0 Authentication successful\r\n";
inline constexpr std::string_view auth_cancelled = "501 5.0.0 Authentication cancelled\r\n";
inline constexpr std::string_view auth_cannot_decode = "501 5.5.2 Cannot decode response\r\n";
inline constexpr std::string_view auth_mechanism_unknown = "504 5.5.4 Unrecognized authentication type\r\n";
inline constexpr std::string_view auth_required = "530 5.7.0 Authentication required\r\n";
inline constexpr std::string_view auth_invalid = "535 5.7.8 Authentication credentials invalid\r\n";
inline constexpr std::string_view auth_needs_encryption =
    "538 5.7.11 Encryption required for requested authentication mechanism\r\n";
inline constexpr std::string_view auth_line_too_long =
    "500 5.5.6 Authentication exchange line is too long\r\n";
inline constexpr std::string_view relay_access_denied = "554 5.7.1 Relay access denied\r\n";
inline constexpr std::string_view auth_already = "503 5.5.1 Already authenticated\r\n";
inline constexpr std::string_view auth_in_transaction =
    "503 5.5.1 AUTH not permitted during a mail transaction\r\n";
inline constexpr std::string_view auth_too_many_failures =
    "421 4.7.0 Too many authentication failures, closing connection\r\n";
inline constexpr std::string_view auth_temporary_failure = "454 4.7.0 Temporary authentication failure\r\n";

// RFC 3207: policy requires TLS before this command.
inline constexpr std::string_view must_starttls = "530 5.7.0 Must issue a STARTTLS command first\r\n";

// Syntax and sequence.
inline constexpr std::string_view unrecognized = "500 5.5.2 Command not recognized\r\n";
inline constexpr std::string_view line_too_long = "500 5.5.2 Line too long\r\n";
inline constexpr std::string_view bad_characters =
    "500 5.5.2 Invalid characters or line ending in command\r\n";
inline constexpr std::string_view not_implemented = "502 5.5.1 Command not implemented\r\n";
inline constexpr std::string_view syntax_error_arguments =
    "501 5.5.4 Syntax error in parameters or arguments\r\n";
inline constexpr std::string_view helo_needs_domain = "501 5.5.4 EHLO and HELO need a domain or address\r\n";
inline constexpr std::string_view mail_syntax = "501 5.1.7 Bad sender address syntax\r\n";
inline constexpr std::string_view rcpt_syntax = "501 5.1.3 Bad recipient address syntax\r\n";
inline constexpr std::string_view send_helo_first = "503 5.5.1 Send EHLO or HELO first\r\n";
inline constexpr std::string_view nested_mail = "503 5.5.1 Sender already specified\r\n";
inline constexpr std::string_view need_mail = "503 5.5.1 Need MAIL command first\r\n";
inline constexpr std::string_view need_rcpt = "503 5.5.1 Need RCPT command first\r\n";
inline constexpr std::string_view no_valid_recipients = "554 5.5.1 No valid recipients\r\n";
inline constexpr std::string_view tls_already_active = "503 5.5.1 TLS already active\r\n";
inline constexpr std::string_view starttls_unavailable = "502 5.5.1 STARTTLS not available on this port\r\n";
inline constexpr std::string_view parameter_unsupported = "555 5.5.4 Unsupported MAIL or RCPT parameter\r\n";
inline constexpr std::string_view utf8_needs_smtputf8 = "553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n";
inline constexpr std::string_view too_many_errors = "421 4.7.0 Too many errors, closing connection\r\n";

// Policy.
inline constexpr std::string_view sender_not_owned =
    "553 5.7.1 Sender address not owned by the authenticated user\r\n";
inline constexpr std::string_view too_many_recipients = "452 4.5.3 Too many recipients\r\n";
inline constexpr std::string_view message_too_big = "552 5.3.4 Message size exceeds fixed limit\r\n";
inline constexpr std::string_view bare_line_ending =
    "550 5.6.0 Message rejected: bare CR or LF is not allowed (RFC 5321 section 2.3.8)\r\n";

// Backend trouble: always temporary, so the client retries and no mail is lost.
inline constexpr std::string_view backend_unavailable =
    "451 4.4.1 Backend temporarily unavailable, try again later\r\n";
inline constexpr std::string_view backend_failed =
    "451 4.4.2 Backend connection lost, message not accepted; try again later\r\n";
inline constexpr std::string_view backend_bad_reply =
    "451 4.5.0 Backend protocol error, message not accepted; try again later\r\n";

// Session.
inline constexpr std::string_view timeout = "421 4.4.2 Timeout, closing connection\r\n";
inline constexpr std::string_view too_many_connections = "421 4.7.0 Too many connections, try again later\r\n";
inline constexpr std::string_view message_rate_limited =
    "450 4.7.1 Too many messages, try again later\r\n";
inline constexpr std::string_view recipient_rate_limited =
    "450 4.7.1 Too many recipients, try again later\r\n";
inline constexpr std::string_view address_locked_out =
    "421 4.7.0 Too many failed logins from your address, try again later\r\n";
// RFC 5321 4.3.1: the client must wait for the greeting.
inline constexpr std::string_view talked_before_greeting =
    "554 5.5.0 Protocol error: talking before the greeting\r\n";
inline constexpr std::string_view data_too_slow = "421 4.4.2 Data transfer too slow, closing connection\r\n";
inline constexpr std::string_view shutting_down = "421 4.3.2 Service shutting down, closing connection\r\n";

/// Why smtpguard's own policy refused something, for the rejections metric:
/// `reply` is one of the constants above; empty for anything else (including
/// every reply relayed from the backend).
constexpr std::string_view rejection_reason(std::string_view reply) noexcept {
  struct entry {
    std::string_view reply;
    std::string_view reason;
  };
  constexpr entry table[] = {
      {auth_required, "relay_denied"},
      {relay_access_denied, "relay_denied"},
      {must_starttls, "tls_required"},
      {auth_needs_encryption, "tls_required"},
      {sender_not_owned, "sender_mismatch"},
      {message_too_big, "message_size"},
      {too_many_recipients, "recipients"},
      {data_too_slow, "rate_limit"},
      {bare_line_ending, "smuggling"},
      {line_too_long, "line_too_long"},
      {auth_line_too_long, "line_too_long"},
      {bad_characters, "bad_characters"},
      {utf8_needs_smtputf8, "smtputf8_required"},
      {unrecognized, "bad_command"},
      {not_implemented, "bad_command"},
      {syntax_error_arguments, "bad_command"},
      {helo_needs_domain, "bad_command"},
      {mail_syntax, "bad_command"},
      {rcpt_syntax, "bad_command"},
      {parameter_unsupported, "bad_command"},
      {too_many_errors, "error_limit"},
      {auth_too_many_failures, "auth_failures"},
      {talked_before_greeting, "pregreet"},
      {message_rate_limited, "message_rate"},
      {recipient_rate_limited, "recipient_rate"},
  };
  for (const auto& e : table) {
    if (e.reply == reply) return e.reason;
  }
  return {};
}

}  // namespace smtpguard::smtp::replies
