#pragma once
// How long a client may take over a message body (RFC 5321 4.5.3.2.6 sets
// 3 minutes between blocks), and a minimum average rate on top, so a client
// that trickles a byte now and then cannot hold a session for hours. Only
// time spent waiting for the client counts: a slow backend never gets a
// client cut off. Pure: the caller measures the waits.
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace smtpguard::smtp {

class data_pace {
 public:
  using duration = std::chrono::nanoseconds;

  /// min_rate in bytes per second (0: no minimum), averaged over `window`;
  /// `block_limit`: the longest wait for the next bytes.
  data_pace(std::uint64_t min_rate, duration window, duration block_limit) noexcept
      : min_rate_(min_rate), window_(window), block_limit_(block_limit) {}

  /// How long the next wait for the client may last.
  duration next_wait() const noexcept;

  enum class verdict {
    go_on,     ///< keep reading
    too_slow,  ///< a window ended below the minimum rate
    timed_out  ///< no bytes for the whole block limit
  };
  /// After a wait of `spent` that brought `bytes` (0 when it ran out).
  verdict after_wait(duration spent, std::size_t bytes) noexcept;

 private:
  // A wait that ends at a window's end is not a timeout.
  bool window_bound() const noexcept;

  std::uint64_t min_rate_;
  duration window_;
  duration block_limit_;
  duration waited_{};  ///< waited in the current window
  duration idle_{};    ///< since the client last sent something
  std::uint64_t window_bytes_ = 0;
};

}  // namespace smtpguard::smtp
