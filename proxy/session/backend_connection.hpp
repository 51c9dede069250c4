#pragma once
// The backend side of a session: plain SMTP to the MTA, over TCP, a Unix
// socket, or a program started for the session. Connects, hands over the
// client's identity the way that backend takes it, reads the 220, says EHLO
// (HELO if refused), then relays one command at a time.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config.hpp"
#include "metrics.hpp"
#include "net/line_io.hpp"
#include "session/backend_program.hpp"
#include "smtp/capabilities.hpp"
#include "smtp/identity.hpp"
#include "smtp/reply.hpp"

namespace smtpguard::session {

/// Why the last backend operation failed.
enum class backend_failure {
  none,
  gone,      ///< closed or reset by the backend, or a write failed
  timeout,   ///< no reply (or no write progress) in time
  protocol,  ///< a malformed reply, or bytes nobody asked for: out of step
};

std::string_view to_string(backend_failure failure) noexcept;

/// What a connection to `server`, greeted as `helo_name`, is kept under.
std::string reuse_key(const backend_server& server, const std::string& helo_name);

class backend_connection {
 public:
  backend_connection(net::tcp::socket socket, const timeouts_config& timeouts);
  ~backend_connection();

  /// Connects and greets. `client` is who the session serves (null for the
  /// health probe): it goes in a PROXY header, XCLIENT or a program's
  /// environment, as `server` says and the backend offers. On failure
  /// returns null and sets `failed_stage` ("connect", "greeting", "ehlo",
  /// "xclient") for logs and metrics. With `stats`, every reply read is counted.
  static net::awaitable<std::unique_ptr<backend_connection>> open(const backend_server& server,
                                                                  const smtp::client_identity* client,
                                                                  const std::string& helo_name,
                                                                  const timeouts_config& timeouts,
                                                                  std::string& failed_stage,
                                                                  metrics* stats = nullptr);

  /// Sends one command line (CRLF added) and reads its reply; nullopt if the
  /// backend is gone, too slow, or breaks the protocol (the connection is then
  /// closed and failure() says why). A backend that sent anything before the
  /// command (an unsolicited reply, or one too many for the last command) is
  /// out of step: the command is not sent, since its reply could not be told
  /// from the stray one.
  net::awaitable<std::optional<smtp::reply>> command(std::string_view line);
  /// A command of a pipelined group (RFC 2920): written with the next read,
  /// its reply read with read_reply() in order. False if the backend is out
  /// of step before the group (the connection is then closed).
  bool queue_command(std::string_view line);
  /// Commands queued whose replies have not been read yet.
  std::size_t outstanding() const noexcept { return outstanding_; }
  /// Raw bytes (message content). False if the backend is gone or spoke
  /// unasked (it then never gets the rest, so never the final dot).
  net::awaitable<bool> write(std::string_view bytes);
  /// One reply, waiting at most `limit`.
  net::awaitable<std::optional<smtp::reply>> read_reply(net::duration limit);
  /// Polite QUIT, then close. Never throws.
  net::awaitable<void> quit();
  /// Drops the connection at once: a message in flight is never completed.
  void abort() noexcept;

  bool is_open() const noexcept { return socket_.is_open(); }
  backend_failure failure() const noexcept { return failure_; }
  const smtp::capabilities& capabilities() const noexcept { return capabilities_; }
  /// MAIL gets AUTH=<user>: configured, and the backend offers AUTH.
  bool takes_mail_auth() const noexcept { return mail_auth_ && !capabilities_.auth_mechanisms.empty(); }
  /// How the client's identity was handed over, for the session's log.
  std::string_view identity() const noexcept { return identity_; }

  /// Which backend, greeted how: a kept connection serves only sessions
  /// that would have opened the same (reuse_key() of their server).
  const std::string& reuse_key() const noexcept { return reuse_key_; }
  /// Fit to serve another session: nothing of its first client went over it
  /// (no PROXY header, XCLIENT or program), no reply is pending and no
  /// message is half sent, it is younger than `lifetime`, and the backend has
  /// not spoken or closed since.
  bool reusable(std::chrono::steady_clock::duration lifetime);
  /// Takes over a kept connection for the session of `client` on `server`.
  void take_over(const backend_server& server, const smtp::client_identity& client) noexcept;

  backend_connection(const backend_connection&) = delete;
  backend_connection& operator=(const backend_connection&) = delete;

 private:
  net::tcp::socket socket_;
  // A copy: a kept connection outlives the configuration it was opened under.
  timeouts_config timeouts_;
  net::line_io<net::tcp::socket> io_;
  smtp::capabilities capabilities_;
  backend_failure failure_ = backend_failure::none;
  std::size_t outstanding_ = 0;
  metrics* stats_ = nullptr;
  bool mail_auth_ = false;
  bool in_content_ = false;  ///< message content written, its end-of-data reply not read yet
  std::string_view identity_ = "received";
  std::optional<backend_program> program_;  ///< a backend started for this session
  std::string program_name_;
  std::string reuse_key_;
  std::chrono::steady_clock::time_point opened_ = std::chrono::steady_clock::now();

  net::awaitable<bool> greet(const std::string& helo_name);

  bool out_of_step();
  void fail(backend_failure why) noexcept;
};

}  // namespace smtpguard::session
