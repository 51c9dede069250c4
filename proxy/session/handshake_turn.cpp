#include "session/handshake_turn.hpp"

#include <tuple>

#include "log.hpp"
#include "net/timeout.hpp"

namespace smtpguard::session {

net::awaitable<std::optional<handshake_slots::slot>> wait_for_handshake_turn(const runtime& rt,
                                                                             net::tcp::socket& socket,
                                                                             std::chrono::steady_clock::time_point deadline,
                                                                             handshake_waiter who) {
  if (rt.handshakes == nullptr) co_return handshake_slots::slot();
  const std::size_t limit = rt.settings->limits.max_tls_handshakes;
  bool spoke = true;
  if (!rt.handshakes->available(limit)) {
    const auto hello = co_await net::with_timeout(socket.async_wait(net::tcp::socket::wait_read, net::as_result),
                                                  deadline - std::chrono::steady_clock::now());
    spoke = hello && !std::get<0>(*hello);
  }
  handshake_slots::slot slot;
  if (spoke) {
    bool waited = false;
    slot = co_await rt.handshakes->acquire(limit, deadline, waited);
    if (waited) rt.stats->tls_handshake_queued();
  }
  if (slot) co_return slot;
  rt.stats->tls_handshake(who.listener, "", "", "timeout");
  log::event("tls_failed")
      .add("session", who.session)
      .add("client", who.client)
      .add("reason", "timeout waiting for a handshake slot");
  co_return std::nullopt;
}

}  // namespace smtpguard::session
