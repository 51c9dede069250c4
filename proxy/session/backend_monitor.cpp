#include "session/backend_monitor.hpp"

#include "log.hpp"
#include "session/backend_connection.hpp"

namespace smtpguard::session {
namespace {

std::shared_ptr<const smtp::capabilities> default_capabilities() {
  smtp::capabilities c;
  c.pipelining = true;
  c.eightbitmime = true;
  c.enhanced_status_codes = true;
  return std::make_shared<const smtp::capabilities>(c);
}

}  // namespace

backend_monitor::backend_monitor(std::shared_ptr<const config> settings, metrics& stats)
    : settings_(std::move(settings)), stats_(stats), capabilities_(default_capabilities()) {}

void backend_monitor::reconfigure(std::shared_ptr<const config> settings) {
  std::lock_guard lock(mutex_);
  settings_ = std::move(settings);
}

std::shared_ptr<const config> backend_monitor::settings() const {
  std::lock_guard lock(mutex_);
  return settings_;
}

std::shared_ptr<const smtp::capabilities> backend_monitor::capabilities() const {
  std::lock_guard lock(mutex_);
  return capabilities_;
}

void backend_monitor::update(const smtp::capabilities& seen) {
  auto fresh = std::make_shared<const smtp::capabilities>(seen);
  std::lock_guard lock(mutex_);
  capabilities_ = std::move(fresh);
  up_ = true;
}

bool backend_monitor::up() const {
  std::lock_guard lock(mutex_);
  return up_;
}

bool backend_monitor::down(const std::string& address) const {
  std::lock_guard lock(mutex_);
  return down_.contains(address);
}

net::awaitable<bool> backend_monitor::probe() {
  // The configuration this probe started with stays alive until it ends.
  const std::shared_ptr<const config> current = settings();
  const backend_config& backend = current->backend;
  // Every backend is probed, so sessions can skip the ones that are down;
  // what the backends offer is what the first that answers offers, since
  // sessions try them in the same order.
  bool any_up = false;
  std::set<std::string> down;
  for (const backend_server& server : backend.servers) {
    std::string failed_stage;
    auto connection =
        co_await backend_connection::open(server, nullptr, backend.helo_name, current->timeouts, failed_stage);
    bool was_down = false;
    {
      std::lock_guard lock(mutex_);
      was_down = down_.contains(server.name) || !up_;
    }
    if (!connection) {
      down.insert(server.name);
      if (!was_down) log::event("backend_down").add("backend", server.name).add("stage", failed_stage);
      continue;
    }
    if (!any_up) update(connection->capabilities());
    any_up = true;
    if (was_down) log::event("backend_up").add("backend", server.name);
    co_await connection->quit();
  }
  {
    std::lock_guard lock(mutex_);
    down_ = std::move(down);
    up_ = any_up;
  }
  stats_.backend_up(any_up);
  co_return any_up;
}

net::awaitable<void> backend_monitor::run() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    co_await probe();
    timer.expires_after(settings()->backend.health_interval);
    auto [error] = co_await timer.async_wait(net::as_result);
    if (error) co_return;
  }
}

}  // namespace smtpguard::session
