#pragma once
// Reads and writes on a non-blocking TCP socket with plain system calls: the
// call is tried first and the reactor is only asked to wait when the kernel
// says EAGAIN, so a ready socket costs one system call and no handler.
// Waits end early with asio::error::operation_aborted when the socket is
// cancelled (a deadline, or a drain).
#include <cstddef>
#include <span>
#include <string_view>
#include <system_error>

#include "net/asio_fwd.hpp"

namespace smtpguard::net {

struct io_result {
  std::error_code error;  ///< asio::error::eof when the peer closed
  std::size_t bytes = 0;
};

/// One read of at most buffer.size() bytes (waits while nothing is there).
awaitable<io_result> read_some(tcp::socket& socket, std::span<char> buffer);
/// Writes every byte, waiting for room as needed.
awaitable<std::error_code> write_all(tcp::socket& socket, std::string_view bytes);

/// The non-waiting halves, for streams built on top of a socket. To wait,
/// socket.async_wait() is safe whenever called: the reactor re-arms the
/// descriptor, which reports data already there.
/// receive_now: bytes read, 0 with `would_block` set when nothing is there,
/// or an error (eof when closed). send_now: bytes sent, possibly fewer.
std::size_t receive_now(tcp::socket& socket, std::span<char> buffer, bool& would_block, std::error_code& error);
std::size_t send_now(tcp::socket& socket, std::string_view bytes, bool& would_block, std::error_code& error);

}  // namespace smtpguard::net
