#pragma once
// Line-oriented I/O over any stream (plain socket or TLS): framed reads with
// a deadline and a write buffer that is flushed only before we block on a
// read, which is what makes replies to pipelined commands go out together
// (RFC 2920 section 3.2).
#include <algorithm>
#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>

#include "memory.hpp"
#include "net/deadline.hpp"
#include "net/socket_io.hpp"
#include "net/tls_stream.hpp"
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

/// The buffer every raw read of the thread lands in. Shared by all the
/// connections of the thread, so what is read must be used before the next
/// suspension: a connection holds no read buffer while it waits.
std::span<char> read_buffer();

template <typename Stream>
class line_io {
 public:
  line_io(Stream& stream, std::size_t max_line)
      : stream_(stream), deadline_(lowest_socket(stream)), framer_(max_line) {}

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
    const bool written = co_await send(output_, limit);
    release(output_);  // replies are short; an idle connection keeps no buffer
    co_return written;
  }

  /// Writes `bytes` without copying them (bulk content); anything queued goes first.
  awaitable<bool> write(std::string_view bytes, duration limit) {
    const bool flushed = co_await flush(limit);
    if (!flushed) co_return false;
    const bool written = co_await send(bytes, limit);
    co_return written;
  }

  /// Next complete line; flushes queued output first if it has to wait.
  awaitable<read_status> read_line(smtp::framed_line& line, duration limit) {
    for (;;) {
      if (const auto framed = buffered_line(line)) co_return *framed;
      const bool flushed = co_await flush(limit);
      if (!flushed) co_return read_status::closed;
      const auto status = co_await read_more(limit);
      if (status != read_status::line) co_return status;
    }
  }

  /// The next command line. `per_read` bounds each read, and `total` the
  /// line from its first byte, so trickling a byte at a time cannot hold a
  /// session open. Before each wait, a true `stop()` ends the read as closed
  /// (a drain); `*idle`, when given, is true while the wait lasts, so that
  /// the drain knows the session may be cut there.
  template <typename Stop>
  awaitable<read_status> read_command(smtp::framed_line& line, duration per_read, duration total, Stop stop,
                                      bool* idle = nullptr) {
    std::optional<std::chrono::steady_clock::time_point> started;
    for (;;) {
      if (const auto framed = buffered_line(line)) co_return *framed;
      const bool flushed = co_await flush(per_read);
      if (!flushed) co_return read_status::closed;
      duration limit = per_read;
      if (framer_.has_buffered()) {
        const auto now = std::chrono::steady_clock::now();
        if (!started) started = now;
        const duration left = *started + total - now;
        if (left <= duration::zero()) co_return read_status::timeout;
        limit = std::min(limit, left);
      }
      if (stop()) co_return read_status::closed;
      std::string_view chunk;
      if (idle != nullptr) *idle = true;
      const auto status = co_await read_raw(chunk, limit);
      if (idle != nullptr) *idle = false;
      if (status != read_status::line) co_return status;
      framer_.feed(chunk);
    }
  }

  /// Reads one chunk of raw bytes; `out` views them only until the caller
  /// next suspends (see read_buffer()).
  awaitable<read_status> read_raw(std::string_view& out, duration limit) {
    framer_.release_consumed();  // it may be a long wait
    const auto buffer = read_buffer();
    deadline_.arm(limit);
    // Right after we said something, the peer is still answering it: a read
    // now would find nothing. The wait is made in this frame, not in
    // read_some()'s, so an idle session holds one coroutine frame fewer.
    const bool wait_first = sent_since_read_ && !has_buffered_input(stream_);
    sent_since_read_ = false;
    io_result got;
    if (wait_first) {
      const std::tuple<std::error_code> waited =
          co_await lowest_socket(stream_).async_wait(tcp::socket::wait_read, as_result);
      got.error = std::get<0>(waited);
    }
    if (!got.error) got = co_await read_some(stream_, buffer);
    deadline_.disarm();
    if (got.error || got.bytes == 0) co_return deadline_.expired() ? read_status::timeout : read_status::closed;
    out = std::string_view(buffer.data(), got.bytes);
    co_return read_status::line;
  }

 private:
  awaitable<bool> send(std::string_view bytes, duration limit) {
    deadline_.arm(limit);
    const std::error_code error = co_await write_all(stream_, bytes);
    deadline_.disarm();
    sent_since_read_ = true;
    co_return !error;
  }

  // A whole line (or one too long) from what is buffered; nullopt: more is needed.
  std::optional<read_status> buffered_line(smtp::framed_line& line) {
    switch (framer_.next(line)) {
      case smtp::frame_status::line:
        return read_status::line;
      case smtp::frame_status::too_long:
        return read_status::too_long;
      case smtp::frame_status::need_more:
        break;
    }
    return std::nullopt;
  }

  awaitable<read_status> read_more(duration limit) {
    std::string_view chunk;
    const auto status = co_await read_raw(chunk, limit);
    if (status == read_status::line) framer_.feed(chunk);
    co_return status;
  }

  Stream& stream_;
  deadline deadline_;
  smtp::line_framer framer_;
  std::string output_;
  reply_observer* observer_ = nullptr;
  bool sent_since_read_ = false;
};

}  // namespace smtpguard::net
