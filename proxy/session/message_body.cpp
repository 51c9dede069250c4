#include "session/message_body.hpp"

#include <chrono>
#include <string_view>

namespace smtpguard::session {

std::string_view to_string(body_end end) noexcept {
  switch (end) {
    case body_end::complete:
      return "complete";
    case body_end::too_slow:
      return "too_slow";
    case body_end::timeout:
      return "timeout";
    case body_end::closed:
      break;
  }
  return "closed";
}

template <typename Stream>
net::awaitable<body_transfer> transfer_body(net::line_io<Stream>& io, backend_connection& backend,
                                            smtp::data_reframer& reframer, std::string header,
                                            smtp::data_pace pace) {
  body_transfer result;
  std::string to_backend = std::move(header);
  const std::string pipelined = io.framer().take_buffered();
  std::string_view input = pipelined;
  for (;;) {
    const auto fed = reframer.feed(input, to_backend);
    if (reframer.error() != smtp::reframe_error::none) to_backend.clear();
    // `input` may view the thread's read buffer: use it up before suspending.
    if (fed.done) io.framer().feed(input.substr(fed.consumed));
    // The header waits for the first of the client's bytes: one write to the
    // backend instead of two.
    if (result.backend_ok && !to_backend.empty() && (fed.done || !input.empty())) {
      result.backend_ok = co_await backend.write(to_backend);
      to_backend.clear();
    }
    if (fed.done) {
      result.end = body_end::complete;
      co_return result;
    }
    const net::duration limit = pace.next_wait();
    const auto before = std::chrono::steady_clock::now();
    const net::read_status status = co_await io.read_raw(input, limit);
    if (status == net::read_status::closed) {
      result.end = body_end::closed;
      co_return result;
    }
    if (status != net::read_status::line) input = {};
    switch (pace.after_wait(std::chrono::steady_clock::now() - before, input.size())) {
      case smtp::data_pace::verdict::go_on:
        break;
      case smtp::data_pace::verdict::too_slow:
        result.end = body_end::too_slow;
        co_return result;
      case smtp::data_pace::verdict::timed_out:
        result.end = body_end::timeout;
        co_return result;
    }
  }
}

template net::awaitable<body_transfer> transfer_body(net::line_io<net::tcp::socket>&, backend_connection&,
                                                     smtp::data_reframer&, std::string, smtp::data_pace);
template net::awaitable<body_transfer> transfer_body(net::line_io<net::tls_stream>&, backend_connection&,
                                                     smtp::data_reframer&, std::string, smtp::data_pace);

}  // namespace smtpguard::session
