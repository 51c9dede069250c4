#pragma once
// The backend side of a session: plain SMTP to the MTA. Connects, reads the
// 220, says EHLO (HELO if refused), then relays one command at a time.
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config.hpp"
#include "net/line_io.hpp"
#include "smtp/capabilities.hpp"
#include "smtp/reply.hpp"

namespace smtpguard::session {

class backend_connection {
 public:
  backend_connection(net::tcp::socket socket, const timeouts_config& timeouts);

  /// Connects and greets. On failure returns null and sets `failed_stage`
  /// ("connect", "greeting", "ehlo") for logs and metrics.
  static net::awaitable<std::unique_ptr<backend_connection>> open(const backend_config& backend,
                                                                  const timeouts_config& timeouts,
                                                                  std::string& failed_stage);

  /// Sends one command line (CRLF added) and reads its reply; nullopt if the
  /// backend is gone, too slow, or breaks the protocol (the connection is then closed).
  net::awaitable<std::optional<smtp::reply>> command(std::string_view line);
  /// Raw bytes (message content). False if the backend is gone.
  net::awaitable<bool> write(std::string_view bytes);
  /// One reply, waiting at most `limit`.
  net::awaitable<std::optional<smtp::reply>> read_reply(net::duration limit);
  /// Polite QUIT, then close. Never throws.
  net::awaitable<void> quit();
  /// Drops the connection at once: a message in flight is never completed.
  void abort() noexcept;

  bool is_open() const noexcept { return socket_.is_open(); }
  const smtp::capabilities& capabilities() const noexcept { return capabilities_; }

  backend_connection(const backend_connection&) = delete;
  backend_connection& operator=(const backend_connection&) = delete;

 private:
  net::tcp::socket socket_;
  const timeouts_config& timeouts_;
  net::line_io<net::tcp::socket> io_;
  smtp::capabilities capabilities_;
};

}  // namespace smtpguard::session
