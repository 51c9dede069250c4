#include "net/socket_io.hpp"

#include <sys/socket.h>

#include <asio/error.hpp>
#include <cerrno>
#include <tuple>

namespace smtpguard::net {

std::size_t receive_now(tcp::socket& socket, std::span<char> buffer, bool& would_block, std::error_code& error) {
  would_block = false;
  error.clear();
  if (!socket.is_open()) {
    error = asio::error::bad_descriptor;
    return 0;
  }
  for (;;) {
    const ssize_t n = ::recv(socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n == 0) {
      error = asio::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      would_block = true;
      return 0;
    }
    error = std::error_code(errno, asio::error::get_system_category());
    return 0;
  }
}

std::size_t send_now(tcp::socket& socket, std::string_view bytes, bool& would_block, std::error_code& error) {
  would_block = false;
  error.clear();
  if (!socket.is_open()) {
    error = asio::error::bad_descriptor;
    return 0;
  }
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    // MSG_NOSIGNAL: a vanished peer is an error code, not SIGPIPE. MSG_DONTWAIT:
    // never block, whatever mode the descriptor is in.
    const ssize_t n = ::send(socket.native_handle(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      would_block = true;
      break;
    }
    error = std::error_code(errno, asio::error::get_system_category());
    break;
  }
  return sent;
}

awaitable<io_result> read_some(tcp::socket& socket, std::span<char> buffer) {
  for (;;) {
    bool would_block = false;
    std::error_code error;
    const std::size_t n = receive_now(socket, buffer, would_block, error);
    if (!would_block) co_return io_result{error, n};
    const std::tuple<std::error_code> waited = co_await socket.async_wait(tcp::socket::wait_read, as_result);
    if (std::get<0>(waited)) co_return io_result{std::get<0>(waited), 0};
  }
}

awaitable<std::error_code> write_all(tcp::socket& socket, std::string_view bytes) {
  for (;;) {
    bool would_block = false;
    std::error_code error;
    const std::size_t n = send_now(socket, bytes, would_block, error);
    if (error) co_return error;
    bytes.remove_prefix(n);
    if (bytes.empty()) co_return std::error_code();
    const std::tuple<std::error_code> waited = co_await socket.async_wait(tcp::socket::wait_write, as_result);
    if (std::get<0>(waited)) co_return std::get<0>(waited);
  }
}

}  // namespace smtpguard::net
