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

net::awaitable<bool> backend_monitor::probe() {
  // The configuration this probe started with stays alive until it ends.
  const std::shared_ptr<const config> current = settings();
  const backend_config& backend = current->backend;
  // Up when any backend answers; what it offers is what the first one that
  // answers offers, since sessions try them in the same order.
  std::string failed_stage;
  std::unique_ptr<backend_connection> connection;
  for (const endpoint& address : backend.addresses) {
    connection = co_await backend_connection::open(address, backend.helo_name, current->timeouts, failed_stage);
    if (connection) break;
  }
  const bool was_up = up();
  if (!connection) {
    {
      std::lock_guard lock(mutex_);
      up_ = false;
    }
    stats_.backend_up(false);
    if (was_up) log::event("backend_down").add("backend", backend.address.text).add("stage", failed_stage);
    co_return false;
  }
  update(connection->capabilities());
  stats_.backend_up(true);
  if (!was_up) log::event("backend_up").add("backend", backend.address.text);
  co_await connection->quit();
  co_return true;
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
