#pragma once
// The DNS blocklists' verdict on one client. Every configured zone is asked
// at once when the session starts and the verdict awaited only when it first
// matters (an unauthorized recipient on an MX listener), so the lookups run
// during the greeting and EHLO instead of delaying them.
#include <asio/ip/address.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "net/asio_fwd.hpp"
#include "net/dns_resolver.hpp"

namespace smtpguard::session {

class dnsbl_check : public std::enable_shared_from_this<dnsbl_check> {
 public:
  struct verdict {
    std::string zone;    ///< the first zone found listing the client; empty: none did
    int unanswered = 0;  ///< zones whose lookup failed or had not answered by the deadline
  };

  /// Starts the lookups; answers later than `timeout` from now are ignored.
  static std::shared_ptr<dnsbl_check> start(net::dns_resolver& dns, const asio::ip::address& client,
                                            const std::vector<std::string>& zones,
                                            std::chrono::milliseconds timeout);

  /// Waits for a listing, for every answer, or for the deadline, whichever
  /// comes first. A zone that failed or did not answer in time lists no one:
  /// a blocklist that is down must not stop the mail.
  net::awaitable<verdict> result();

 private:
  explicit dnsbl_check(std::chrono::steady_clock::time_point deadline) : deadline_(deadline) {}
  void answered(const std::string& zone, bool found, const std::vector<net::dns_resolver::ipv4>& addresses);
  bool settled() const noexcept { return pending_ == 0 || !listed_.empty(); }

  std::chrono::steady_clock::time_point deadline_;
  int pending_ = 0;
  int failed_ = 0;
  std::string listed_;
  asio::steady_timer* waiter_ = nullptr;  ///< the session's wait, while it waits
};

}  // namespace smtpguard::session
