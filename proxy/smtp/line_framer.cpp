#include "smtp/line_framer.hpp"

#include <cstring>

#include "memory.hpp"

namespace smtpguard::smtp {

line_framer::line_framer(std::size_t max_length) : max_length_(max_length) {}

void line_framer::feed(std::string_view bytes) {
  if (discarding_) {
    // The rest of an over-long line is dropped as it arrives, never buffered.
    const auto lf = bytes.find('\n');
    if (lf == std::string_view::npos) return;
    discarding_ = false;
    bytes.remove_prefix(lf + 1);
  }
  if (bytes.empty()) return;
  if (start_ > 0) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(bytes.data(), bytes.size());
}

frame_status line_framer::next(framed_line& out) {
  const char* begin = buffer_.data() + start_;
  const std::size_t available = buffer_.size() - start_;
  const auto* lf = static_cast<const char*>(std::memchr(begin, '\n', available));
  if (lf == nullptr) {
    if (available < max_length_) return frame_status::need_more;
    // Even with its LF arriving next, this line would exceed the limit.
    buffer_.clear();
    start_ = 0;
    discarding_ = true;
    return frame_status::too_long;
  }
  const auto length = static_cast<std::size_t>(lf - begin) + 1;
  const std::size_t line_start = start_;
  start_ += length;
  if (length > max_length_) return frame_status::too_long;

  std::size_t text_length = length - 1;
  out = framed_line{};
  if (text_length > 0 && begin[text_length - 1] == '\r') {
    --text_length;
  } else {
    out.bare_lf = true;
  }
  out.text = std::string_view(buffer_).substr(line_start, text_length);
  out.has_bare_cr = out.text.find('\r') != std::string_view::npos;
  out.has_nul = out.text.find('\0') != std::string_view::npos;
  return frame_status::line;
}

void line_framer::release_consumed() noexcept {
  if (start_ < buffer_.size()) return;
  release(buffer_);
  start_ = 0;
}

bool line_framer::has_buffered() const noexcept { return start_ < buffer_.size(); }

bool line_framer::has_line() const noexcept {
  if (discarding_) return false;
  return std::memchr(buffer_.data() + start_, '\n', buffer_.size() - start_) != nullptr;
}

std::string line_framer::take_buffered() {
  std::string rest = buffer_.substr(start_);
  release(buffer_);
  start_ = 0;
  return rest;
}

void line_framer::clear() noexcept {
  buffer_.clear();
  start_ = 0;
  discarding_ = false;
}

}  // namespace smtpguard::smtp
