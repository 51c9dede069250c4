#include "net/connect.hpp"

#include <unistd.h>

#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>

namespace smtpguard::net {

// Whatever its kind, the backend's byte stream is held in a tcp::socket:
// only calls that mean the same for every stream socket (recv, send, poll,
// FIONREAD, shutdown) are made on it, so the I/O code is the same for all.
bool adopt(int descriptor, tcp::socket& socket, tcp protocol) {
  std::error_code error;
  socket.assign(protocol, descriptor, error);
  if (!error) return true;
  ::close(descriptor);
  return false;
}

awaitable<bool> connect_tcp(const endpoint& address, duration limit, tcp::socket& out) {
  auto executor = co_await asio::this_coro::executor;
  tcp::socket socket(executor);
  // A literal address needs no lookup (the lookup runs on another thread).
  std::error_code not_literal;
  const auto literal = asio::ip::make_address(address.host, not_literal);
  if (!not_literal) {
    const tcp::endpoint peer(literal, address.port);
    auto connected = co_await with_timeout(socket.async_connect(peer, as_result), limit);
    if (!connected || std::get<0>(*connected)) co_return false;
  } else {
    tcp::resolver resolver(executor);
    auto resolved = co_await with_timeout(
        resolver.async_resolve(address.host, std::to_string(address.port), as_result),
        limit);
    if (!resolved || std::get<0>(*resolved)) co_return false;
    auto connected = co_await with_timeout(
        asio::async_connect(socket, std::get<1>(*resolved), as_result), limit);
    if (!connected || std::get<0>(*connected)) co_return false;
  }
  std::error_code error;
  socket.set_option(tcp::no_delay(true), error);
  const tcp protocol = socket.local_endpoint(error).protocol();
  // Waiting for the connect left the descriptor watched for writability too,
  // which would wake the loop after every command we send. Registered
  // afresh, it is watched for input only.
  const auto descriptor = socket.release(error);
  if (error) co_return false;
  co_return adopt(descriptor, out, protocol);
}

awaitable<bool> connect_unix(const std::string& path, duration limit, tcp::socket& out) {
  asio::local::stream_protocol::socket socket(co_await asio::this_coro::executor);
  const asio::local::stream_protocol::endpoint peer(path);
  auto connected = co_await with_timeout(socket.async_connect(peer, as_result), limit);
  if (!connected || std::get<0>(*connected)) co_return false;
  std::error_code error;
  const auto descriptor = socket.release(error);
  if (error) co_return false;
  co_return adopt(descriptor, out);
}

}  // namespace smtpguard::net
