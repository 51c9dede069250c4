#pragma once
// The backend POP3 server's status lines, checked as strictly as a client's
// commands: a line that is none of these ends the session.
#include <cstddef>
#include <string_view>

namespace smtpguard::pop3 {

enum class status {
  ok,            ///< "+OK" or "+OK text"
  err,           ///< "-ERR" or "-ERR text"
  continuation,  ///< "+" or "+ base64" (a SASL challenge, RFC 5034)
  invalid,
};

/// RFC 2449 section 4: a status line is at most 512 octets with its CRLF
/// (a SASL challenge may be longer).
inline constexpr std::size_t max_status_line = 512;

/// Classifies one line (without CRLF). Control characters other than tab
/// make it invalid.
status classify(std::string_view line);

/// True for the line that ends a multi-line response.
inline bool ends_multiline(std::string_view line) noexcept { return line == "."; }

}  // namespace smtpguard::pop3
