#pragma once
// SMTP replies (RFC 5321 section 4.2, RFC 3463 enhanced status codes).
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace smtpguard::smtp {

/// A complete, possibly multi-line reply.
struct reply {
  int code = 0;
  std::vector<std::string> lines;  ///< text of each line, without "NNN-" / "NNN "

  /// Wire form: "250-a\r\n250 b\r\n" (an empty `lines` serializes as "NNN\r\n").
  std::string serialize() const;
  /// Appends the wire form to `out` without a temporary.
  void append_to(std::string& out) const;
  int reply_class() const noexcept { return code / 100; }
  /// "2.1.0" when the first line starts with an enhanced status code whose
  /// class digit matches the reply class, else empty.
  std::string_view enhanced_code() const;
};

/// A single-line reply.
reply make_reply(int code, std::string_view text);

/// Adds "C.0.0 " in front of every line that lacks an enhanced status code,
/// used when relaying a backend without ENHANCEDSTATUSCODES to a client we
/// promised them to. Meaning (code and text) is unchanged.
void ensure_enhanced_codes(reply& r);

/// The backend's queue id from its reply to the final dot, for logs: Postfix
/// "queued as ID", Exim "id=ID", sendmail "ID Message accepted for delivery",
/// qmail "qp N"; empty when the reply names none.
std::string queue_id(const reply& r);

/// Strict backend reply parser, fed one line (without CRLF) at a time: each
/// line must be 3 digits (2xx-5xx), then '-' or ' ' or the end of the line,
/// then printable text; all lines of one reply share the code.
class reply_parser {
 public:
  enum class status { need_more, done, bad };

  explicit reply_parser(std::size_t max_lines = 128, std::size_t max_line_length = 2048);

  /// Feeds one line. After done or bad, take() / reset() before feeding again.
  status feed(std::string_view line);
  /// Returns the completed reply and resets the parser.
  reply take();
  void reset();

 private:
  std::size_t max_lines_;
  std::size_t max_line_length_;
  reply current_;
  status state_ = status::need_more;
};

}  // namespace smtpguard::smtp
