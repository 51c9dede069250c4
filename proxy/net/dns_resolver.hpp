#pragma once
// DNS lookups for one I/O thread, through c-ares driven by the thread's
// Asio reactor: c-ares says which of its sockets to watch, Asio waits on
// them, and c-ares does the rest. No thread blocks on DNS.
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

struct ares_channeldata;

namespace smtpguard::net {

class dns_resolver {
 public:
  using ipv4 = std::array<std::uint8_t, 4>;
  /// `found` is false when the lookup failed (timeout, server failure);
  /// NXDOMAIN and no A record are a lookup that worked and found nothing.
  using a_handler = std::function<void(bool found_or_empty, std::vector<ipv4> addresses)>;

  /// `servers`: "ip" or "ip:port" (IPv6 as "[ip]:port"); empty: the system's
  /// (/etc/resolv.conf). `timeout`: per try, two tries per server.
  /// Throws std::runtime_error when c-ares cannot start or a server is malformed.
  dns_resolver(asio::any_io_executor executor, const std::vector<std::string>& servers,
               std::chrono::milliseconds timeout);
  ~dns_resolver();
  dns_resolver(const dns_resolver&) = delete;
  dns_resolver& operator=(const dns_resolver&) = delete;

  /// Looks up the A records of `name` (absolute: no search domains). The
  /// handler runs on the executor's thread, possibly before this returns.
  void lookup_a(const std::string& name, a_handler done);

 private:
  struct watched;
  static void on_socket_state(void* data, int fd, int readable, int writable);
  void watch(int fd, bool readable, bool writable);
  void wait_on(int fd, bool for_write);
  void arm_timer();

  asio::any_io_executor executor_;
  ares_channeldata* channel_ = nullptr;
  std::unordered_map<int, std::unique_ptr<watched>> sockets_;
  asio::steady_timer timer_;
};

}  // namespace smtpguard::net
