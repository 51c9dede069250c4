#pragma once
// Every POP3 line the front writes itself, in wire form, with an RFC 2449 /
// RFC 3206 response code where one applies. The backend's lines are relayed,
// not taken from here.
#include <string_view>

namespace smtpguard::pop3::replies {

inline constexpr std::string_view stls_ready = "+OK Begin TLS negotiation\r\n";
inline constexpr std::string_view tls_active = "-ERR TLS already active\r\n";
inline constexpr std::string_view login_needs_tls = "-ERR [AUTH] Login only over TLS: send STLS first\r\n";
inline constexpr std::string_view unknown_command = "-ERR Unknown command, or not valid before login\r\n";
inline constexpr std::string_view mechanism_unavailable =
    "-ERR [AUTH] Channel binding mechanisms are not available through this server\r\n";
inline constexpr std::string_view line_too_long = "-ERR Line too long\r\n";
inline constexpr std::string_view bad_characters = "-ERR Command contains invalid characters\r\n";
inline constexpr std::string_view too_many_errors = "-ERR Too many errors, closing connection\r\n";
inline constexpr std::string_view too_many_failures = "-ERR [AUTH] Too many failed logins, closing connection\r\n";
inline constexpr std::string_view locked_out =
    "-ERR [SYS/TEMP] Too many failed logins from your address or for this user, try again later\r\n";
inline constexpr std::string_view backend_unavailable =
    "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n";
inline constexpr std::string_view timeout = "-ERR Disconnected for inactivity\r\n";
inline constexpr std::string_view shutting_down = "-ERR [SYS/TEMP] Server shutting down\r\n";
inline constexpr std::string_view address_locked_out =
    "-ERR [SYS/TEMP] Too many failed logins from your address, try again later\r\n";
inline constexpr std::string_view too_many_connections =
    "-ERR [SYS/TEMP] Too many connections, try again later\r\n";

}  // namespace smtpguard::pop3::replies
