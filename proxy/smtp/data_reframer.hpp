#pragma once
// The DATA re-framer: the SMTP smuggling firewall (RFC 5321 sections 4.1.4,
// 4.5.2; SEC Consult 2023). smtpguard decides where each line and the message
// end, and sends the backend canonical CRLF lines, dot-stuffed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace smtpguard::smtp {

/// What to do with a bare LF or a bare CR inside a message.
enum class line_ending_policy { reject, normalize };

struct reframer_options {
  line_ending_policy bare_line_endings = line_ending_policy::reject;
  std::uint64_t max_size = 0;  ///< 0 = unlimited; counted on unstuffed content with CRLF
  /// Longest line passed on, in content octets without CRLF (RFC 5321 4.5.3.1.6: 998);
  /// longer lines are folded with CRLF. 0 = no limit.
  std::size_t max_line_length = 998;
};

enum class reframe_error { none, bare_line_ending, too_big };

/// Streaming, resumable, no per-line allocation. Only CRLF "." CRLF (or "."
/// CRLF as the very first line) ends the message. A client line ".x" is
/// unstuffed to "x"; every output line starting with "." is stuffed again.
/// Under `normalize`, bare LF and bare CR end a line and are written as CRLF,
/// and a lone "." line next to a bare ending is content (sent as ".."), never
/// the end. Under `reject`, the first bare ending sets the error. After any
/// error nothing more is written to `out`, but input is still scanned so the
/// real end of the message is found.
class data_reframer {
 public:
  explicit data_reframer(reframer_options options);

  struct result {
    std::size_t consumed = 0;  ///< input octets used; the rest is pipelined input after the message
    bool done = false;         ///< end of message seen
  };

  /// Consumes client bytes, appending backend bytes to `out`. When done and no
  /// error occurred, the terminating ".\r\n" has been appended.
  result feed(std::string_view in, std::string& out);

  reframe_error error() const noexcept { return error_; }
  /// Message size so far in octets (unstuffed content, each line ending counted as CRLF).
  std::uint64_t size() const noexcept { return size_; }

 private:
  // The fast path: input that leaves exactly as it came, passed on in large
  // pieces. Each returns where it stopped; `p` when it could take nothing.
  const char* pass_plain_lines(const char* p, const char* end, std::string& out);     // from a line start
  const char* continue_plain_line(const char* p, const char* end, std::string& out);  // from inside a line
  const char* plain_end(const char* p, const char* end) const noexcept;  // how far the size limit allows
  std::size_t longest_line() const noexcept;
  // One step of the octet-level scanner, for everything else.
  const char* step(const char* p, const char* end, std::string& out);
  void emit(std::string& out, const char* data, std::size_t length) const;
  void emit_content(std::string& out, const char* data, std::size_t length);  // counted in size_
  bool end_line(bool canonical, std::string& out);  // true at the end of the message

  reframer_options options_;
  reframe_error error_ = reframe_error::none;
  std::uint64_t size_ = 0;
  // Scanner state between feeds.
  bool at_line_start_ = true;
  bool previous_ending_canonical_ = true;  // the line before ended in CRLF (true at the start)
  bool pending_cr_ = false;                // last octet seen was CR
  bool pending_dot_ = false;               // line so far is exactly "."
  bool done_ = false;                      // end of message already returned
  std::size_t line_length_ = 0;            // content octets written on the current output line
};

}  // namespace smtpguard::smtp
