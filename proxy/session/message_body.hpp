#pragma once
// A message body on its way from the client to the backend: the client's
// bytes go through the re-framer (the SMTP smuggling firewall) and on to the
// backend as they come, paced by smtp::data_pace. The final reply, what is
// logged and what the client is told are the session's business.
#include <string>
#include <string_view>

#include "net/asio_fwd.hpp"
#include "net/line_io.hpp"
#include "session/backend_connection.hpp"
#include "smtp/data_pace.hpp"
#include "smtp/data_reframer.hpp"

namespace smtpguard::session {

/// How the client's side of a body transfer ended.
enum class body_end {
  complete,  ///< the end-of-data line was read (the re-framer may have refused the message all the same)
  too_slow,  ///< the client sent below the minimum rate
  timeout,   ///< the client was silent for the block limit
  closed     ///< the client went away
};

/// "too_slow", "timeout", ..., for logs.
std::string_view to_string(body_end end) noexcept;

struct body_transfer {
  body_end end = body_end::closed;
  bool backend_ok = true;  ///< every write to the backend went through
};

/// Sends `header` and then the body the client sends on `io` to `backend`,
/// up to the end-of-data line, which the backend only gets if the re-framer
/// accepted everything (check `reframer.error()`). Commands the client
/// pipelined after the body stay in io's framer.
template <typename Stream>
net::awaitable<body_transfer> transfer_body(net::line_io<Stream>& io, backend_connection& backend,
                                            smtp::data_reframer& reframer, std::string header,
                                            smtp::data_pace pace);

}  // namespace smtpguard::session
