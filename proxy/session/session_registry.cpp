#include "session/session_registry.hpp"

#include <asio/post.hpp>
#include <vector>

namespace smtpguard::session {

std::uint64_t session_registry::add(asio::any_io_executor executor, std::function<void()> on_drain) {
  std::uint64_t id = 0;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    sessions_.emplace(id, entry{executor, std::move(on_drain)});
  }
  if (draining_.load()) notify(id, executor);
  return id;
}

void session_registry::remove(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(id);
}

void session_registry::drain() {
  draining_.store(true);
  std::vector<std::pair<std::uint64_t, asio::any_io_executor>> targets;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, e] : sessions_) targets.emplace_back(id, e.executor);
  }
  for (const auto& [id, executor] : targets) notify(id, executor);
}

std::size_t session_registry::active() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

// A session is removed on its own thread, so once the posted handler finds it
// registered there, it stays alive for the duration of the call.
void session_registry::notify(std::uint64_t id, const asio::any_io_executor& executor) {
  asio::post(executor, [this, id] {
    std::function<void()> callback;
    {
      std::lock_guard lock(mutex_);
      const auto it = sessions_.find(id);
      if (it == sessions_.end()) return;
      callback = it->second.on_drain;
    }
    callback();
  });
}

}  // namespace smtpguard::session
