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

backend_monitor::backend_monitor(const backend_config& backend, const timeouts_config& timeouts,
                                 metrics& stats)
    : backend_(backend), timeouts_(timeouts), stats_(stats), capabilities_(default_capabilities()) {}

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
  std::string failed_stage;
  auto connection = co_await backend_connection::open(backend_, timeouts_, failed_stage);
  const bool was_up = up();
  if (!connection) {
    {
      std::lock_guard lock(mutex_);
      up_ = false;
    }
    stats_.backend_up(false);
    if (was_up) log::event("backend_down").add("backend", backend_.address.text).add("stage", failed_stage);
    co_return false;
  }
  update(connection->capabilities());
  stats_.backend_up(true);
  if (!was_up) log::event("backend_up").add("backend", backend_.address.text);
  co_await connection->quit();
  co_return true;
}

net::awaitable<void> backend_monitor::run() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    co_await probe();
    timer.expires_after(backend_.health_interval);
    auto [error] = co_await timer.async_wait(net::as_result);
    if (error) co_return;
  }
}

}  // namespace smtpguard::session
