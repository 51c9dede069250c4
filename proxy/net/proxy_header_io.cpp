#include "net/proxy_header_io.hpp"

#include <sys/socket.h>

#include <array>

namespace smtpguard::net {
namespace {

proxy_header_read closed() { return {std::nullopt, "closed", "closed"}; }

awaitable<proxy_header_read> read_header(tcp::socket& socket) {
  std::array<char, smtp::proxy_header_max_size> buffer;
  std::size_t have = 0;  // bytes known to be the header's, already taken off the socket
  for (;;) {
    const std::tuple<std::error_code> waited = co_await socket.async_wait(tcp::socket::wait_read, as_result);
    if (std::get<0>(waited)) co_return closed();
    // Look without taking: only the header's bytes may be consumed.
    const ssize_t seen = ::recv(socket.native_handle(), buffer.data() + have, buffer.size() - have,
                                MSG_PEEK | MSG_DONTWAIT);
    if (seen < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (seen <= 0) co_return closed();
    const auto result = smtp::parse_proxy_header(std::string_view(buffer.data(), have + static_cast<std::size_t>(seen)));
    if (result.status == smtp::proxy_status::bad) co_return proxy_header_read{std::nullopt, "bad", result.reason};
    // Incomplete: everything seen so far is header. Complete: exactly its rest.
    const std::size_t take =
        result.status == smtp::proxy_status::done ? result.consumed - have : static_cast<std::size_t>(seen);
    const ssize_t taken = ::recv(socket.native_handle(), buffer.data() + have, take, MSG_DONTWAIT);
    if (taken != static_cast<ssize_t>(take)) co_return closed();
    have += take;
    if (result.status == smtp::proxy_status::done) co_return proxy_header_read{result.header, {}, {}};
  }
}

}  // namespace

awaitable<proxy_header_read> read_proxy_header(tcp::socket& socket, duration limit) {
  auto read = co_await with_timeout(read_header(socket), limit);
  if (!read) co_return proxy_header_read{std::nullopt, "timeout", "timeout"};
  co_return std::move(*read);
}

}  // namespace smtpguard::net
