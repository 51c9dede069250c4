#include "smtp/data_reframer.hpp"

#include <algorithm>

namespace smtpguard::smtp {
namespace {

// First CR or LF in [p, end), or end.
const char* find_line_break(const char* p, const char* end) noexcept {
  while (p != end && *p != '\r' && *p != '\n') ++p;
  return p;
}

}  // namespace

data_reframer::data_reframer(reframer_options options) : options_(options) {}

void data_reframer::emit(std::string& out, const char* data, std::size_t length) const {
  if (error_ == reframe_error::none) out.append(data, length);
}

void data_reframer::emit_content(std::string& out, const char* data, std::size_t length) {
  const std::uint64_t limit = options_.max_size;
  if (error_ == reframe_error::none && limit != 0 && size_ + length > limit) {
    // Cut exactly at the limit, so the output does not depend on how reads were split.
    out.append(data, static_cast<std::size_t>(limit - size_));
    error_ = reframe_error::too_big;
  }
  emit(out, data, length);
  size_ += length;
}

bool data_reframer::end_line(bool canonical, std::string& out) {
  const bool lone_dot = pending_dot_;
  const bool after_canonical = previous_ending_canonical_;
  pending_dot_ = false;
  at_line_start_ = true;
  line_length_ = 0;
  previous_ending_canonical_ = canonical;
  // RFC 5321 section 4.1.1.4: only CRLF "." CRLF ends the data. A "." line
  // touching a bare CR or LF is exactly what smuggling relies on, since other
  // servers may treat that ending as the end of the message.
  if (lone_dot && canonical && after_canonical) {
    emit(out, ".\r\n", 3);
    done_ = true;
    return true;
  }
  if (!canonical && options_.bare_line_endings == line_ending_policy::reject &&
      error_ == reframe_error::none) {
    error_ = reframe_error::bare_line_ending;
  }
  if (lone_dot) {
    emit(out, ".", 1);
    emit_content(out, ".", 1);
  }
  emit_content(out, "\r\n", 2);
  return false;
}

data_reframer::result data_reframer::feed(std::string_view in, std::string& out) {
  if (done_) return {0, true};
  const char* const begin = in.data();
  const char* const end = begin + in.size();
  const char* p = begin;
  while (p != end) {
    if (pending_cr_) {
      pending_cr_ = false;
      if (*p == '\n') {
        ++p;
        if (end_line(true, out)) return {static_cast<std::size_t>(p - begin), true};
      } else {
        // A bare CR ends the line; the octet after it starts the next one.
        end_line(false, out);
      }
      continue;
    }
    if (at_line_start_) {
      at_line_start_ = false;
      if (*p == '.') {
        pending_dot_ = true;
        ++p;
        continue;
      }
    } else if (pending_dot_ && *p != '\r' && *p != '\n') {
      // RFC 5321 section 4.5.2: the client's leading dot is removed; the
      // content is stuffed again when it itself starts with a dot.
      pending_dot_ = false;
      if (*p == '.') emit(out, ".", 1);
    }
    const char* const stop = find_line_break(p, end);
    const std::size_t limit = options_.max_line_length;
    while (p != stop) {
      if (limit != 0 && line_length_ == limit) {
        // RFC 5321 4.5.3.1.6: an over-long line is folded, never passed on.
        // The continuation is a line of its own and is stuffed like any
        // other, so a fold can never produce a lone "." at the backend.
        emit_content(out, "\r\n", 2);
        line_length_ = 0;
        if (*p == '.') emit(out, ".", 1);
      }
      auto length = static_cast<std::size_t>(stop - p);
      if (limit != 0) length = std::min(length, limit - line_length_);
      emit_content(out, p, length);
      line_length_ += length;
      p += length;
    }
    if (p == end) break;
    if (*p++ == '\r') {
      pending_cr_ = true;
    } else {
      end_line(false, out);
    }
  }
  return {in.size(), false};
}

}  // namespace smtpguard::smtp
