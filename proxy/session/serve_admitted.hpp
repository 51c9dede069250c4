#pragma once
// The coroutine an admitted connection's session runs in, whatever its
// protocol (SMTP or POP3).
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <utility>

#include "config.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "net/asio_fwd.hpp"
#include "net/connection_limits.hpp"

namespace smtpguard::session {
namespace detail {

// Every idle session holds this coroutine's frame, so it is spawned on its
// own once the connection is admitted: nothing admission needed stays in it.
// `slot` is the session's place under the connection limits, held to its end.
template <typename Session>
net::awaitable<void> serve_admitted(std::unique_ptr<Session> session, net::tcp::socket socket,
                                    [[maybe_unused]] net::connection_limits::slot slot,
                                    const listener_config& listener, metrics* stats) {
  const auto started = std::chrono::steady_clock::now();
  stats->session_started();
  try {
    co_await session->run(socket);
  } catch (const std::exception& e) {
    log::event("session_error").add("listener", listener.name).add("error", e.what());
  }
  session.reset();
  stats->session_ended(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

}  // namespace detail

/// Runs `session` (anything with `awaitable<void> run(tcp::socket&)`) on the
/// socket's executor to its end, counted in the session metrics; an
/// exception out of it is logged and ends only that session.
template <typename Session>
void spawn_admitted(std::unique_ptr<Session> session, net::tcp::socket socket, net::connection_limits::slot slot,
                    const listener_config& listener, metrics* stats) {
  const auto executor = socket.get_executor();
  asio::co_spawn(executor,
                 detail::serve_admitted(std::move(session), std::move(socket), std::move(slot), listener, stats),
                 asio::detached);
}

}  // namespace smtpguard::session
