#include "net/listener.hpp"

#include <sys/socket.h>

#include <system_error>

#include "log.hpp"

namespace smtpguard::net {

tcp::acceptor open_acceptor(const asio::any_io_executor& executor, const endpoint& address) {
  asio::error_code error;
  const auto ip = asio::ip::make_address(address.host, error);
  if (error) throw std::system_error(error, address.text + ": not an IP address");
  const tcp::endpoint where(ip, address.port);
  tcp::acceptor acceptor(executor);
  acceptor.open(where.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
  acceptor.bind(where, error);
  if (error) throw std::system_error(error, address.text);
  acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) throw std::system_error(error, address.text);
  return acceptor;
}

awaitable<void> accept_loop(tcp::acceptor& acceptor, std::function<void(tcp::socket)> on_accept) {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  for (;;) {
    auto [error, socket] = co_await acceptor.async_accept(as_result);
    if (!error) {
      on_accept(std::move(socket));
      continue;
    }
    if (error == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    // Out of descriptors or memory: back off instead of spinning.
    log::event("accept_failed").add("error", error.message());
    pause.expires_after(std::chrono::milliseconds(100));
    co_await pause.async_wait(as_result);
  }
}

}  // namespace smtpguard::net
