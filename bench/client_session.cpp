#include "client_session.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <string_view>
#include <utility>

#include "net/line_io.hpp"
#include "net/timeout.hpp"
#include "sasl/base64.hpp"
#include "smtp/reply.hpp"

namespace smtpguard::bench {
namespace {

using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using tls_stream = net::tls_stream;

constexpr std::size_t max_reply_line = 2048;

int resume_slot_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* slot = static_cast<resume_slot*>(SSL_get_ex_data(ssl, resume_slot_index()));
  if (slot == nullptr) return 0;
  slot->session.reset(session);  // we take the reference
  return 1;
}

/// A reply, or why there is none.
struct reply_outcome {
  int code = 0;               ///< 0 when failure is set
  std::string failure;        ///< "timeout", "closed", "bad_reply"
  std::string first_line;     ///< text of the first line (CRAM-MD5 challenge)
};

/// Client side of the line protocol over one stream.
template <typename Stream>
class conversation {
 public:
  conversation(Stream& stream, net::duration limit) : io_(stream, max_reply_line), limit_(limit) {}

  /// Sends `line` + CRLF (when it is read) and reads the reply.
  net::awaitable<reply_outcome> command(std::string_view line) {
    io_.queue(line);
    io_.queue("\r\n");
    auto r = co_await read_reply();
    co_return r;
  }

  /// Sends bulk content as it is (no copy into the write buffer), then reads the reply.
  net::awaitable<reply_outcome> send_content(std::string_view bytes) {
    const bool written = co_await io_.write(bytes, limit_);
    if (!written) {
      reply_outcome out;
      out.failure = "closed";
      co_return out;
    }
    auto r = co_await read_reply();
    co_return r;
  }

  /// Reads one complete reply, flushing queued output first.
  net::awaitable<reply_outcome> read_reply() {
    smtp::reply_parser parser;
    reply_outcome out;
    for (;;) {
      smtp::framed_line line;
      const auto status = co_await io_.read_line(line, limit_);
      if (status == net::read_status::timeout) {
        out.failure = "timeout";
        co_return out;
      }
      if (status != net::read_status::line) {
        out.failure = status == net::read_status::too_long ? "bad_reply" : "closed";
        co_return out;
      }
      std::string_view text = line.text;
      if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
      const auto parsed = parser.feed(text);
      if (parsed == smtp::reply_parser::status::bad) {
        out.failure = "bad_reply";
        co_return out;
      }
      if (parsed == smtp::reply_parser::status::done) {
        auto r = parser.take();
        out.code = r.code;
        if (!r.lines.empty()) out.first_line = std::move(r.lines.front());
        co_return out;
      }
    }
  }

  bool framer_has_buffered() { return io_.framer().has_buffered(); }

 private:
  net::line_io<Stream> io_;
  net::duration limit_;
};

/// Empty when `r` carries `expected`; else the failure reason for `step`.
/// An unexpected reply is also kept in `detail` ("530 5.7.0 ...").
std::string check(std::string& detail, const reply_outcome& r, int expected, std::string_view step) {
  if (!r.failure.empty()) return r.failure;
  if (r.code != expected) {
    detail = std::to_string(r.code) + " " + r.first_line;
    return std::string(step);
  }
  return {};
}

std::string hex(const unsigned char* bytes, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 0x0f];
  }
  return out;
}

/// [The 220 greeting,] then EHLO and its 250. Empty on success.
template <typename Stream>
net::awaitable<std::string> greet(conversation<Stream>& c, bool expect_greeting, std::string& detail) {
  reply_outcome r;
  if (expect_greeting) {
    r = co_await c.read_reply();
    const std::string failure = check(detail, r, 220, "greeting");
    if (!failure.empty()) co_return failure;
  }
  r = co_await c.command("EHLO bench.example.test");
  co_return check(detail, r, 250, "ehlo");
}

template <typename Stream>
net::awaitable<std::string> authenticate(conversation<Stream>& c, const options& o, session_result& result) {
  reply_outcome r;
  std::string failure;
  switch (o.auth) {
    case auth_kind::none:
      co_return std::string{};
    case auth_kind::plain: {
      std::string token;
      token += '\0';
      token += o.user;
      token += '\0';
      token += o.password;
      r = co_await c.command("AUTH PLAIN " + sasl::base64_encode(token));
      co_return check(result.detail, r, 235, "auth");
    }
    case auth_kind::login: {
      r = co_await c.command("AUTH LOGIN");
      failure = check(result.detail, r, 334, "auth");
      if (!failure.empty()) co_return failure;
      r = co_await c.command(sasl::base64_encode(o.user));
      failure = check(result.detail, r, 334, "auth");
      if (!failure.empty()) co_return failure;
      r = co_await c.command(sasl::base64_encode(o.password));
      co_return check(result.detail, r, 235, "auth");
    }
    case auth_kind::cram_md5: {
      r = co_await c.command("AUTH CRAM-MD5");
      failure = check(result.detail, r, 334, "auth");
      if (!failure.empty()) co_return failure;
      const auto challenge = sasl::base64_decode(r.first_line);
      if (!challenge) co_return std::string("auth");
      std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
      unsigned int digest_size = 0;
      if (HMAC(EVP_md5(), o.password.data(), o.password.size(),
               reinterpret_cast<const std::uint8_t*>(challenge->data()), challenge->size(),
               digest.data(), &digest_size) == nullptr)
        co_return std::string("auth");
      r = co_await c.command(sasl::base64_encode(o.user + " " + hex(digest.data(), digest_size)));
      co_return check(result.detail, r, 235, "auth");
    }
  }
  co_return std::string("auth");
}

/// Everything after the transport is ready: [greeting], EHLO, AUTH,
/// transactions, [hold], QUIT. Empty on success, else the failure reason.
template <typename Stream>
net::awaitable<std::string> converse(Stream& stream, const session_setup& setup, bool expect_greeting,
                                     std::optional<clock_type::time_point> hold_until, session_result& result) {
  const options& o = *setup.opts;
  conversation<Stream> c(stream, std::chrono::duration_cast<net::duration>(std::chrono::duration<double>(o.timeout_s)));
  reply_outcome r;
  std::string failure = co_await greet(c, expect_greeting, result.detail);
  if (!failure.empty()) co_return failure;

  failure = co_await authenticate(c, o, result);
  if (!failure.empty()) co_return failure;

  if (hold_until) {
    asio::steady_timer timer(co_await asio::this_coro::executor, *hold_until);
    co_await timer.async_wait(net::as_result);
  } else {
    for (std::size_t i = 0; i < o.messages_per_session; ++i) {
      r = co_await c.command("MAIL FROM:<" + o.from + ">");
      failure = check(result.detail, r, 250, "mail");
      if (!failure.empty()) co_return failure;
      r = co_await c.command("RCPT TO:<" + o.to + ">");
      failure = check(result.detail, r, 250, "rcpt");
      if (!failure.empty()) co_return failure;
      r = co_await c.command("DATA");
      failure = check(result.detail, r, 354, "data");
      if (!failure.empty()) co_return failure;
      r = co_await c.send_content(setup.message_wire);
      failure = check(result.detail, r, 250, "end");
      if (!failure.empty()) co_return failure;
      ++result.messages;
      result.bytes += setup.message_bytes;
    }
  }
  r = co_await c.command("QUIT");
  failure = check(result.detail, r, 221, "quit");
  result.seconds = std::chrono::duration<double>(clock_type::now() - result.started).count();
  co_return failure;
}

net::awaitable<std::string> handshake(tls_stream& tls, const options& o, resume_slot* slot, session_result& result) {
  SSL* ssl = tls.native_handle();
  SSL_set_tlsext_host_name(ssl, o.server_name.c_str());
  if (!o.insecure) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), o.server_name.data(), o.server_name.size());
  }
  if (slot != nullptr) {
    SSL_set_ex_data(ssl, resume_slot_index(), slot);
    if (slot->session) SSL_set_session(ssl, slot->session.get());
  }
  const auto limit = std::chrono::duration_cast<net::duration>(std::chrono::duration<double>(o.timeout_s));
  auto done = co_await net::with_timeout(tls.handshake(), limit);
  if (!done) co_return std::string("timeout");
  if (*done) co_return std::string("tls");
  result.resumed = SSL_session_reused(ssl) != 0;
  co_return std::string{};
}

net::awaitable<void> close_tls(tls_stream& tls) {
  // Best effort close_notify; the session is already measured.
  tls.shutdown();
  std::error_code ec;
  tls.socket().close(ec);
  co_return;
}

net::awaitable<std::string> session_body(const session_setup& setup, resume_slot* slot,
                                         std::optional<clock_type::time_point> hold_until, session_result& result) {
  const options& o = *setup.opts;
  const auto limit = std::chrono::duration_cast<net::duration>(std::chrono::duration<double>(o.timeout_s));
  tcp::socket socket(co_await asio::this_coro::executor);
  auto connected = co_await net::with_timeout(socket.async_connect(setup.endpoint, net::as_result), limit);
  if (!connected) co_return std::string("timeout");
  if (std::get<0>(*connected)) co_return std::string("connect");
  std::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);

  std::string failure;
  switch (o.mode) {
    case tls_mode::plain: {
      failure = co_await converse(socket, setup, true, hold_until, result);
      socket.close(ignored);
      co_return failure;
    }
    case tls_mode::smtps: {
      tls_stream tls(std::move(socket), setup.tls->native_handle(), net::tls_role::client);
      failure = co_await handshake(tls, o, slot, result);
      if (!failure.empty()) co_return failure;
      failure = co_await converse(tls, setup, true, hold_until, result);
      if (failure.empty()) co_await close_tls(tls);
      co_return failure;
    }
    case tls_mode::starttls: {
      bool clean = true;
      {
        conversation<tcp::socket> c(socket, limit);
        failure = co_await greet(c, true, result.detail);
        if (!failure.empty()) co_return failure;
        reply_outcome r;
        r = co_await c.command("STARTTLS");
        failure = check(result.detail, r, 220, "starttls");
        if (!failure.empty()) co_return failure;
        clean = !c.framer_has_buffered();
      }
      if (!clean) co_return std::string("starttls_extra_bytes");
      tls_stream tls(std::move(socket), setup.tls->native_handle(), net::tls_role::client);
      failure = co_await handshake(tls, o, slot, result);
      if (!failure.empty()) co_return failure;
      failure = co_await converse(tls, setup, false, hold_until, result);
      if (failure.empty()) co_await close_tls(tls);
      co_return failure;
    }
  }
  co_return std::string("internal");
}

}  // namespace

void enable_resumption(asio::ssl::context& ctx) {
  SSL_CTX_set_session_cache_mode(ctx.native_handle(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx.native_handle(), on_new_session);
}

std::string build_message(const options& o, std::size_t& content_bytes) {
  std::string content = "From: <" + o.from + ">\r\nTo: <" + o.to +
                        ">\r\nSubject: smtpguard-bench\r\nMessage-ID: <bench@bench.example.test>\r\n\r\n";
  constexpr std::size_t line_length = 78;
  for (std::size_t n = 0; content.size() < o.message_size; ++n) {
    const std::size_t remaining = o.message_size - content.size();
    const std::size_t length = std::min(line_length, remaining > 2 ? remaining - 2 : std::size_t{0});
    std::string line(length, 'x');
    for (std::size_t i = 0; i < length; ++i) line[i] = static_cast<char>('a' + (n + i) % 26);
    if (n % 16 == 0 && length > 0) line[0] = '.';  // exercises dot-stuffing
    content += line;
    content += "\r\n";
  }
  content_bytes = content.size();

  std::string wire;
  wire.reserve(content.size() + content.size() / 64 + 3);
  std::size_t start = 0;
  while (start < content.size()) {
    const auto end = content.find("\r\n", start);
    const auto stop = end == std::string::npos ? content.size() : end + 2;
    if (content[start] == '.') wire += '.';
    wire.append(content, start, stop - start);
    start = stop;
  }
  wire += ".\r\n";
  return wire;
}

net::awaitable<session_result> run_session(const session_setup& setup, resume_slot* slot,
                                           std::optional<clock_type::time_point> hold_until) {
  session_result result;
  result.started = clock_type::now();
  std::string failure;
  try {
    failure = co_await session_body(setup, slot, hold_until, result);
  } catch (const std::exception&) {
    failure = "exception";
  }
  if (!failure.empty()) result.seconds = std::chrono::duration<double>(clock_type::now() - result.started).count();
  result.ok = failure.empty();
  result.failure = std::move(failure);
  co_return result;
}

}  // namespace smtpguard::bench
