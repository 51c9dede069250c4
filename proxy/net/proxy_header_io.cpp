#include "net/proxy_header_io.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <array>
#include <charconv>
#include <cstring>

namespace smtpguard::net {
namespace {

bool in_network(const asio::ip::address& address, const std::string& network) {
  const auto slash = network.find('/');
  const std::string text = network.substr(0, slash);
  std::array<unsigned char, 16> want{};
  unsigned bits = 0;
  std::array<unsigned char, 16> have{};
  if (::inet_pton(AF_INET, text.c_str(), want.data()) == 1) {
    if (!address.is_v4()) return false;
    const auto bytes = address.to_v4().to_bytes();
    std::memcpy(have.data(), bytes.data(), bytes.size());
    bits = 32;
  } else if (::inet_pton(AF_INET6, text.c_str(), want.data()) == 1) {
    if (!address.is_v6()) return false;
    const auto bytes = address.to_v6().to_bytes();
    std::memcpy(have.data(), bytes.data(), bytes.size());
    bits = 128;
  } else {
    return false;
  }
  unsigned prefix = bits;
  if (slash != std::string::npos) {
    const std::string length = network.substr(slash + 1);
    std::from_chars(length.data(), length.data() + length.size(), prefix);
  }
  const unsigned whole = prefix / 8;
  if (std::memcmp(want.data(), have.data(), whole) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (want[whole] & mask) == (have[whole] & mask);
}

awaitable<std::optional<smtp::proxy_header>> read_header(tcp::socket& socket, std::string& reason) {
  std::array<char, smtp::proxy_header_max_size> buffer;
  std::size_t have = 0;  // bytes known to be the header's, already taken off the socket
  for (;;) {
    const std::tuple<std::error_code> waited = co_await socket.async_wait(tcp::socket::wait_read, as_result);
    if (std::get<0>(waited)) {
      reason = "closed";
      co_return std::nullopt;
    }
    // Look without taking: only the header's bytes may be consumed.
    const ssize_t seen = ::recv(socket.native_handle(), buffer.data() + have, buffer.size() - have,
                                MSG_PEEK | MSG_DONTWAIT);
    if (seen < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (seen <= 0) {
      reason = "closed";
      co_return std::nullopt;
    }
    const auto result = smtp::parse_proxy_header(std::string_view(buffer.data(), have + static_cast<std::size_t>(seen)));
    if (result.status == smtp::proxy_status::bad) {
      reason = result.reason;
      co_return std::nullopt;
    }
    // Incomplete: everything seen so far is header. Complete: exactly its rest.
    const std::size_t take =
        result.status == smtp::proxy_status::done ? result.consumed - have : static_cast<std::size_t>(seen);
    const ssize_t taken = ::recv(socket.native_handle(), buffer.data() + have, take, MSG_DONTWAIT);
    if (taken != static_cast<ssize_t>(take)) {
      reason = "closed";
      co_return std::nullopt;
    }
    have += take;
    if (result.status == smtp::proxy_status::done) co_return result.header;
  }
}

}  // namespace

bool in_networks(const asio::ip::address& address, const std::vector<std::string>& networks) {
  asio::ip::address plain = address;
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    plain = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  for (const auto& network : networks)
    if (in_network(plain, network)) return true;
  return false;
}

awaitable<std::optional<smtp::proxy_header>> read_proxy_header(tcp::socket& socket, duration limit,
                                                               std::string& reason) {
  auto header = co_await with_timeout(read_header(socket, reason), limit);
  if (!header) {
    reason = "timeout";
    co_return std::nullopt;
  }
  co_return std::move(*header);
}

}  // namespace smtpguard::net
