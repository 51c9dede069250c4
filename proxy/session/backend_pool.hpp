#pragma once
// Backend connections kept between the sessions of one thread, like Postfix's
// SMTP connection cache: a session that ends with no transaction open leaves
// its connection here, and the thread's next session to the same backend
// skips the connect, the greeting and EHLO, and the QUIT at its end. Only
// connections that carry nothing of their first client are kept (see
// backend_connection::reusable); every message still gets its own Received
// header and, where configured, its own MAIL AUTH=.
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "net/asio_fwd.hpp"
#include "session/backend_connection.hpp"

namespace smtpguard::session {

class backend_pool {
 public:
  using clock = std::chrono::steady_clock;

  /// Everything is used on `executor`'s thread only.
  explicit backend_pool(asio::any_io_executor executor);
  ~backend_pool();

  /// The most recently kept connection under `key` still fit for a session
  /// (younger than `lifetime`, not spoken to or closed by the backend since),
  /// or null. The unfit ones met on the way are dropped.
  std::unique_ptr<backend_connection> take(std::string_view key, clock::duration lifetime);
  /// Keeps `connection` for `idle`, then QUITs it; past `max_idle` kept
  /// connections, the oldest is QUIT at once.
  void keep(std::unique_ptr<backend_connection> connection, clock::duration idle, std::size_t max_idle);
  /// QUITs every kept connection and keeps none from now on (SIGTERM).
  void close_all();
  /// close_all() has run and every QUIT it sent is answered or given up on;
  /// safe from any thread.
  bool closed() const noexcept { return closed_.load() && retiring_.load() == 0; }
  /// QUITs the connections whose time is up; runs until the executor stops.
  net::awaitable<void> run();

  std::size_t size() const noexcept { return kept_.size(); }
  const asio::any_io_executor& executor() const noexcept { return executor_; }

  backend_pool(const backend_pool&) = delete;
  backend_pool& operator=(const backend_pool&) = delete;

 private:
  struct kept {
    std::unique_ptr<backend_connection> connection;
    clock::time_point until;
  };

  void retire(std::unique_ptr<backend_connection> connection);

  asio::any_io_executor executor_;
  asio::steady_timer timer_;
  std::deque<kept> kept_;  ///< oldest first
  std::atomic<bool> closed_{false};
  std::atomic<std::size_t> retiring_{0};  ///< QUITs in progress
};

}  // namespace smtpguard::session
