#pragma once
// The open client sessions, so that SIGTERM can reach each of them on its own
// thread: idle ones are told 421 at once, busy ones finish what is in flight.
#include <asio/any_io_executor.hpp>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

namespace smtpguard::session {

class session_registry {
 public:
  /// `on_drain` runs on `executor` (the session's own thread) once draining
  /// starts, or right away (posted) if it already has.
  std::uint64_t add(asio::any_io_executor executor, std::function<void()> on_drain);
  /// Called by the session on its own thread as it ends.
  void remove(std::uint64_t id);
  /// Starts draining: every registered session gets its on_drain.
  void drain();

  bool draining() const noexcept { return draining_.load(); }
  std::size_t active() const;

 private:
  struct entry {
    asio::any_io_executor executor;
    std::function<void()> on_drain;
  };
  void notify(std::uint64_t id, const asio::any_io_executor& executor);

  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, entry> sessions_;
  std::uint64_t next_id_ = 1;
  std::atomic<bool> draining_{false};
};

}  // namespace smtpguard::session
