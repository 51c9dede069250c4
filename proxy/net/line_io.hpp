#pragma once
// Line-oriented I/O over any stream (plain socket or TLS): framed reads with
// a deadline and a write buffer that is flushed only before we block on a
// read, which is what makes replies to pipelined commands go out together
// (RFC 2920 section 3.2).
#include <array>
#include <asio/buffer.hpp>
#include <asio/write.hpp>
#include <string>
#include <string_view>

#include "net/timeout.hpp"
#include "smtp/line_framer.hpp"

namespace smtpguard::net {

enum class read_status { line, too_long, closed, timeout };

/// Sees each reply as it is queued (whole replies are queued in one call).
class reply_observer {
 public:
  virtual void on_reply(std::string_view reply) = 0;

 protected:
  ~reply_observer() = default;
};

template <typename Stream>
class line_io {
 public:
  line_io(Stream& stream, std::size_t max_line) : stream_(stream), framer_(max_line) {}

  Stream& stream() noexcept { return stream_; }
  smtp::line_framer& framer() noexcept { return framer_; }

  /// Appends bytes to the write buffer.
  void queue(std::string_view bytes) {
    if (observer_ != nullptr && !bytes.empty()) observer_->on_reply(bytes);
    output_ += bytes;
  }
  void observe_replies(reply_observer* observer) noexcept { observer_ = observer; }
  bool has_output() const noexcept { return !output_.empty(); }

  /// Writes everything queued. False if the peer is gone or too slow.
  awaitable<bool> flush(duration limit) {
    if (output_.empty()) co_return true;
    auto written = co_await with_timeout(asio::async_write(stream_, asio::buffer(output_), as_result), limit);
    output_.clear();
    co_return written && !std::get<0>(*written);
  }

  /// Next complete line; flushes queued output first if it has to wait.
  awaitable<read_status> read_line(smtp::framed_line& line, duration limit) {
    for (;;) {
      switch (framer_.next(line)) {
        case smtp::frame_status::line:
          co_return read_status::line;
        case smtp::frame_status::too_long:
          co_return read_status::too_long;
        case smtp::frame_status::need_more:
          break;
      }
      const bool flushed = co_await flush(limit);
      if (!flushed) co_return read_status::closed;
      const auto status = co_await read_more(limit);
      if (status != read_status::line) co_return status;
    }
  }

  /// Reads one chunk of raw bytes; `out` views them until the next read.
  awaitable<read_status> read_raw(std::string_view& out, duration limit) {
    auto got = co_await with_timeout(stream_.async_read_some(asio::buffer(input_), as_result), limit);
    if (!got) co_return read_status::timeout;
    auto [error, n] = *got;
    if (error || n == 0) co_return read_status::closed;
    out = std::string_view(input_.data(), n);
    co_return read_status::line;
  }

 private:
  awaitable<read_status> read_more(duration limit) {
    std::string_view chunk;
    const auto status = co_await read_raw(chunk, limit);
    if (status == read_status::line) framer_.feed(chunk);
    co_return status;
  }

  Stream& stream_;
  smtp::line_framer framer_;
  std::string output_;
  reply_observer* observer_ = nullptr;
  std::array<char, 16384> input_{};
};

}  // namespace smtpguard::net
