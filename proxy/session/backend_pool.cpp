#include "session/backend_pool.hpp"

#include <algorithm>

namespace smtpguard::session {
namespace {

net::awaitable<void> say_goodbye(std::unique_ptr<backend_connection> connection, std::atomic<std::size_t>& retiring) {
  co_await connection->quit();
  --retiring;
}

}  // namespace

backend_pool::backend_pool(asio::any_io_executor executor) : executor_(executor), timer_(executor) {}

backend_pool::~backend_pool() = default;

std::unique_ptr<backend_connection> backend_pool::take(std::string_view key, clock::duration lifetime) {
  for (std::size_t i = kept_.size(); i-- > 0;) {
    if (kept_[i].connection->reuse_key() != key) continue;
    auto connection = std::move(kept_[i].connection);
    kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(i));
    if (connection->reusable(lifetime)) return connection;
    // Too old, or closed or spoken to by the backend while it waited (its
    // QUIT then fails at once). The older ones under the same key are
    // checked in turn.
    retire(std::move(connection));
  }
  return nullptr;
}

void backend_pool::keep(std::unique_ptr<backend_connection> connection, clock::duration idle,
                        std::size_t max_idle) {
  if (closed_ || max_idle == 0) {
    retire(std::move(connection));
    return;
  }
  while (kept_.size() >= max_idle) {
    retire(std::move(kept_.front().connection));
    kept_.pop_front();
  }
  const auto until = clock::now() + idle;
  kept_.push_back({std::move(connection), until});
  // The timer sleeps until the earliest expiry; only a shorter idle time
  // (after a reload) can bring that forward.
  if (until < timer_.expiry()) timer_.cancel();
}

void backend_pool::close_all() {
  while (!kept_.empty()) {
    retire(std::move(kept_.front().connection));
    kept_.pop_front();
  }
  closed_ = true;
  timer_.cancel();
}

net::awaitable<void> backend_pool::run() {
  while (!closed_) {
    clock::time_point next = clock::time_point::max();
    for (const kept& entry : kept_) next = std::min(next, entry.until);
    timer_.expires_at(next);
    co_await timer_.async_wait(net::as_result);
    const auto now = clock::now();
    for (auto it = kept_.begin(); it != kept_.end();) {
      if (it->until > now) {
        ++it;
        continue;
      }
      retire(std::move(it->connection));
      it = kept_.erase(it);
    }
  }
}

void backend_pool::retire(std::unique_ptr<backend_connection> connection) {
  ++retiring_;
  asio::co_spawn(executor_, say_goodbye(std::move(connection), retiring_), asio::detached);
}

}  // namespace smtpguard::session
