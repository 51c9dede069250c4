#include "session/admission.hpp"

#include <asio/write.hpp>
#include <chrono>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "auth/lockout.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "net/connection_limits.hpp"
#include "net/networks.hpp"
#include "net/proxy_header_io.hpp"
#include "net/timeout.hpp"
#include "session/client_session.hpp"
#include "session/pop3_session.hpp"
#include "session/shared_state.hpp"
#include "pop3/replies.hpp"
#include "smtp/replies.hpp"

namespace smtpguard::session {
namespace {

namespace replies = smtp::replies;
using steady_clock = std::chrono::steady_clock;

// A load balancer sends its PROXY header at once; a connection that does not is not from one.
constexpr auto proxy_header_timeout = std::chrono::seconds(10);

// Counted across every session of the process, whichever thread runs it.
// One instance per process: the limits come from the configuration, which a
// reload never changes (only certificates and users are reloaded).
struct shared_guards {
  net::connection_limits connections;
  auth::lockout_table lockouts;
  auth::lockout_table message_counts;
  auth::lockout_table recipient_counts;
};

shared_guards& guards_for(const config& settings) {
  static shared_guards instance{{settings.limits.max_connections, settings.limits.max_connections_per_ip},
                                auth::lockout_table(settings.auth.lockout),
                                auth::lockout_table(send_budgets(settings, send_budget::messages)),
                                auth::lockout_table(send_budgets(settings, send_budget::recipients))};
  return instance;
}

// The load balancer's header, before anything else. On success `peer` and
// `local` are the client's addresses from it (kept as they are for a health
// check, which carries none); on failure the connection is to be closed
// without a word: whatever is on it is not SMTP from a client.
net::awaitable<bool> take_proxy_header(net::tcp::socket& socket, const listener_config& listener, metrics& stats,
                                       net::tcp::endpoint& peer, net::tcp::endpoint& local) {
  net::proxy_header_read read;
  if (!net::in_networks(peer.address(), listener.proxy_trusted)) {
    read.failure = read.reason = "untrusted";
  } else {
    read = co_await net::read_proxy_header(socket, proxy_header_timeout);
  }
  if (!read.header) {
    stats.proxy_header(read.failure);
    log::event("proxy_header_refused")
        .add("peer", peer.address().to_string())
        .add("listener", listener.name)
        .add("reason", read.reason);
    co_return false;
  }
  const smtp::proxy_header& header = *read.header;
  if (!header.has_addresses()) {
    stats.proxy_header(header.local ? "local" : "unknown");
    co_return true;
  }
  std::error_code error;
  const auto source = asio::ip::make_address(header.source_address, error);
  const auto destination = asio::ip::make_address(header.destination_address, error);
  if (error) {  // the parser hands out canonical addresses only
    stats.proxy_header("bad");
    co_return false;
  }
  stats.proxy_header("proxied");
  peer = net::tcp::endpoint(source, header.source_port);
  local = net::tcp::endpoint(destination, header.destination_port);
  co_return true;
}

}  // namespace

void reconfigure_shared_limits(const config& settings) {
  auto& guards = guards_for(settings);
  guards.connections.set_limits(settings.limits.max_connections, settings.limits.max_connections_per_ip);
  guards.lockouts.set_settings(settings.auth.lockout);
  guards.message_counts.set_settings(send_budgets(settings, send_budget::messages));
  guards.recipient_counts.set_settings(send_budgets(settings, send_budget::recipients));
}

net::awaitable<void> run_client_session(net::tcp::socket socket, const listener_config& listener, runtime rt) {
  auto* stats = rt.stats;
  stats->connection_accepted(listener.name);
  try {
    asio::error_code ignored;
    net::tcp::endpoint peer = socket.remote_endpoint(ignored);
    net::tcp::endpoint local = socket.local_endpoint(ignored);
    socket.set_option(net::tcp::no_delay(true), ignored);
    if (listener.proxy_protocol) {
      const bool read = co_await take_proxy_header(socket, listener, *stats, peer, local);
      if (!read) {
        socket.close(ignored);
        co_return;
      }
    }
    auto& guards = guards_for(*rt.settings);
    std::string key = net::client_key(peer.address());
    net::connection_limits::slot slot;
    std::string_view refused;
    shared_state shared(rt, guards.lockouts);
    const bool locked = co_await shared.ip_locked(key);
    if (locked) {
      refused = "lockout";
    } else {
      switch (guards.connections.try_acquire(key, slot)) {
        case net::admission::admitted:
          break;
        case net::admission::total_limit:
          refused = "total_limit";
          break;
        case net::admission::per_ip_limit:
          refused = "per_ip_limit";
          break;
      }
    }
    if (!refused.empty()) {
      stats->connection_rejected(refused);
      log::event("connection_rejected")
          .add("client", peer.address().to_string())
          .add("listener", listener.name)
          .add("reason", refused);
      // A plaintext reply would be garbage to a client expecting a TLS handshake.
      if (listener.tls != tls_mode::implicit) {
        const bool pop3 = listener.protocol == listener_protocol::pop3;
        const bool lockout = refused == "lockout";
        const std::string_view text = pop3 ? (lockout ? pop3::replies::address_locked_out
                                                      : pop3::replies::too_many_connections)
                                           : (lockout ? replies::address_locked_out : replies::too_many_connections);
        co_await net::with_timeout(asio::async_write(socket, asio::buffer(text), net::as_result),
                                   last_words_timeout);
        socket.shutdown(net::tcp::socket::shutdown_send, ignored);
      }
      socket.close(ignored);
      co_return;
    }
    if (listener.protocol == listener_protocol::pop3)
      start_pop3_session(std::move(socket), listener, std::move(rt), peer, std::move(key), std::move(slot),
                         guards.lockouts);
    else {
      const auto& limits = rt.settings->limits;
      const bool own_messages = rt.users && rt.users->has_message_budgets();
      const bool own_recipients = rt.users && rt.users->has_recipient_budgets();
      if (limits.max_messages_per_user > 0 || limits.max_messages_per_ip > 0 || own_messages)
        rt.message_counts = &guards.message_counts;
      if (limits.max_recipients_per_user > 0 || limits.max_recipients_per_ip > 0 || own_recipients)
        rt.recipient_counts = &guards.recipient_counts;
      start_client_session(std::move(socket), listener, std::move(rt), peer, local, std::move(key),
                           std::move(slot), guards.lockouts);
    }
  } catch (const std::exception& e) {
    log::event("session_error").add("listener", listener.name).add("error", e.what());
  }
}

}  // namespace smtpguard::session
