#pragma once
// A backend MTA started per session as a program speaking SMTP on its stdin
// and stdout (`sendmail -bs`, qmail-smtpd the way tcpserver runs it): no
// listener on the MTA side at all.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "net/asio_fwd.hpp"

namespace smtpguard::session {

class backend_program {
 public:
  /// Starts argv[0] with one end of a Unix socket pair as its stdin and
  /// stdout, `environment` ("NAME=value") as its whole environment, its
  /// stderr shared with ours, and no other descriptor of ours. On success
  /// `our_end` is the other end (non-blocking, close-on-exec).
  static std::optional<backend_program> start(const std::vector<std::string>& argv,
                                              const std::vector<std::string>& environment, int& our_end,
                                              std::error_code& error);

  /// Once its input is closed the program should exit by itself; it is
  /// waited for in the background (never by the session), terminated if it
  /// lingers past `exit_grace` (killed if it outlives SIGTERM too), and
  /// always reaped, so no zombie is left behind.
  void reap_later(const asio::any_io_executor& executor, std::string name, std::chrono::seconds exit_grace) &&;

  backend_program(backend_program&& other) noexcept;
  backend_program& operator=(backend_program&& other) noexcept;
  backend_program(const backend_program&) = delete;
  ~backend_program();

 private:
  backend_program(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  void stop() noexcept;
  pid_t pid_ = -1;
  int pidfd_ = -1;  ///< readable once the program has exited
};

}  // namespace smtpguard::session
