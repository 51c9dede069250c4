#include "session/dnsbl_check.hpp"

#include <array>
#include <cstdint>

#include "net/networks.hpp"
#include "smtp/dnsbl.hpp"

namespace smtpguard::session {

std::shared_ptr<dnsbl_check> dnsbl_check::start(net::dns_resolver& dns, const asio::ip::address& client,
                                                const std::vector<std::string>& zones,
                                                std::chrono::milliseconds timeout) {
  std::shared_ptr<dnsbl_check> check(new dnsbl_check(std::chrono::steady_clock::now() + timeout));
  const asio::ip::address plain = net::unmapped(client);
  for (const auto& zone : zones) {
    const std::string name = plain.is_v4() ? smtp::dnsbl_query_name(plain.to_v4().to_bytes(), zone)
                                           : smtp::dnsbl_query_name(plain.to_v6().to_bytes(), zone);
    ++check->pending_;
    // The lookup holds the check: it may answer after the session is gone.
    dns.lookup_a(name, [check, zone](bool found, std::vector<net::dns_resolver::ipv4> addresses) {
      check->answered(zone, found, addresses);
    });
  }
  return check;
}

void dnsbl_check::answered(const std::string& zone, bool found,
                           const std::vector<net::dns_resolver::ipv4>& addresses) {
  --pending_;
  if (!found) ++failed_;
  if (found && listed_.empty())
    for (const auto& address : addresses)
      if (smtp::dnsbl_listing(address)) {
        listed_ = zone;
        break;
      }
  if (settled() && waiter_ != nullptr) waiter_->cancel();
}

net::awaitable<dnsbl_check::verdict> dnsbl_check::result() {
  if (!settled() && std::chrono::steady_clock::now() < deadline_) {
    asio::steady_timer wake(co_await asio::this_coro::executor, deadline_);
    waiter_ = &wake;
    // Cleared however the wait ends, the frame's destruction included.
    struct clear {
      asio::steady_timer*& waiter;
      ~clear() { waiter = nullptr; }
    } const guard{waiter_};
    co_await wake.async_wait(net::as_result);
  }
  co_return verdict{listed_, listed_.empty() ? pending_ + failed_ : 0};
}

}  // namespace smtpguard::session
