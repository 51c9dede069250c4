#pragma once
// Incremental framer for SMTP command lines (RFC 5321 section 2.3.8, 4.5.3.1.4).
#include <cstddef>
#include <string>
#include <string_view>

namespace smtpguard::smtp {

/// What the framer found when asked for the next line.
enum class frame_status { line, need_more, too_long };

/// One framed line. `text` excludes the terminator and stays valid until the
/// next call to feed(), next(), take_buffered(), release_consumed() or
/// clear().
struct framed_line {
  std::string_view text;
  bool bare_lf = false;      ///< ended by LF without a preceding CR
  bool has_bare_cr = false;  ///< contains a CR that is not part of the CRLF ending
  bool has_nul = false;      ///< contains a NUL octet
};

/// Splits client bytes into lines at LF. A line longer than `max_length`
/// octets (terminator included) is reported once as too_long and then
/// discarded up to and including its LF, so memory stays bounded by
/// max_length plus one read.
class line_framer {
 public:
  explicit line_framer(std::size_t max_length = 512);

  /// Appends bytes read from the client.
  void feed(std::string_view bytes);
  /// Extracts the next complete line, if any.
  frame_status next(framed_line& out);
  /// True if unconsumed bytes remain (pipelined input).
  bool has_buffered() const noexcept;
  /// Frees the buffer once every byte in it has been consumed, so a session
  /// waiting for its next command holds none.
  void release_consumed() noexcept;
  /// Bytes of memory the buffer holds (its capacity).
  std::size_t held_bytes() const noexcept { return buffer_.capacity(); }
  /// True if a whole line is buffered: next() will not need more input.
  bool has_line() const noexcept;
  /// Removes and returns every unconsumed byte (hand-off to the DATA re-framer).
  std::string take_buffered();
  /// Forgets everything buffered, including a pending too-long discard (STARTTLS).
  void clear() noexcept;

 private:
  std::size_t max_length_;
  std::string buffer_;
  std::size_t start_ = 0;      // first unconsumed byte in buffer_
  bool discarding_ = false;    // inside an over-long line, dropping until LF
};

}  // namespace smtpguard::smtp
