#include "net/tls_stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>

#include <algorithm>
#include <asio/error.hpp>
#include <asio/ssl/error.hpp>
#include <climits>
#include <memory>
#include <stdexcept>
#include <tuple>

#include "memory.hpp"

namespace smtpguard::net {
namespace {

// Big enough for several full TLS records per system call.
constexpr std::size_t receive_buffer_size = 64 * 1024;

std::span<char> receive_buffer() {
  thread_local std::unique_ptr<char[]> buffer;
  if (!buffer) buffer.reset(new char[receive_buffer_size]);
  return {buffer.get(), receive_buffer_size};
}

tls_stream* owner(BIO* bio) { return static_cast<tls_stream*>(BIO_get_data(bio)); }

int bio_read(BIO* bio, char* out, int length) {
  BIO_clear_retry_flags(bio);
  const int n = owner(bio)->bio_read(out, length);
  if (n < 0) BIO_set_retry_read(bio);
  return n;
}

int bio_write(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  return owner(bio)->bio_write(data, length);
}

long bio_ctrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

const BIO_METHOD* stream_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "smtpguard stream");
    if (m == nullptr || !BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
        !BIO_meth_set_ctrl(m, bio_ctrl))
      throw std::runtime_error("cannot create the TLS stream BIO method");
    return m;
  }();
  return method;
}

std::error_code ssl_error() {
  const auto code = ERR_get_error();
  if (code == 0) return std::make_error_code(std::errc::protocol_error);
  return {static_cast<int>(code), asio::error::get_ssl_category()};
}

}  // namespace

tls_stream::tls_stream(tcp::socket socket, SSL_CTX* context, tls_role role) : socket_(std::move(socket)) {
  ssl_ = SSL_new(context);
  BIO* bio = ssl_ != nullptr ? BIO_new(stream_method()) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl_);
    throw std::runtime_error("cannot create a TLS connection");
  }
  BIO_set_data(bio, this);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // one reference, owned by the SSL from here on
  // Frees the handshake configuration (certificates, verification and
  // cipher settings) once the handshake is done: idle sessions keep only the
  // connection's own state.
  SSL_set_shed_handshake_config(ssl_, 1);
  if (role == tls_role::server)
    SSL_set_accept_state(ssl_);
  else
    SSL_set_connect_state(ssl_);
}

tls_stream::~tls_stream() { SSL_free(ssl_); }

int tls_stream::bio_read(char* out, int length) noexcept {
  if (input_size_ == 0 || length <= 0) return -1;
  const std::size_t n = std::min(input_size_, static_cast<std::size_t>(length));
  std::copy_n(input_, n, out);
  input_ += n;
  input_size_ -= n;
  return static_cast<int>(n);
}

int tls_stream::bio_write(const char* data, int length) noexcept {
  try {
    output_.append(data, static_cast<std::size_t>(length));
  } catch (...) {
    return -1;
  }
  return length;
}

void tls_stream::use_pending_input() noexcept {
  if (pending_.empty()) return;
  input_ = pending_.data();
  input_size_ = pending_.size();
  input_is_pending_ = true;
}

void tls_stream::use_received_input(std::size_t size) noexcept {
  input_ = receive_buffer().data();
  input_size_ = size;
  input_is_pending_ = false;
}

// The receive buffer is shared by every connection of the thread, so what
// the TLS library did not take must be copied out before we suspend.
void tls_stream::keep_unread_input() {
  if (input_is_pending_) {
    if (input_size_ == 0)
      release(pending_);
    else
      pending_.erase(0, static_cast<std::size_t>(input_ - pending_.data()));
  } else if (input_size_ > 0) {
    pending_.assign(input_, input_size_);
  }
  input_ = nullptr;
  input_size_ = 0;
  input_is_pending_ = false;
}

tls_stream::step tls_stream::result_of(int ret, std::error_code& error) {
  if (ret > 0) return step::done;
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      return step::want_read;
    case SSL_ERROR_ZERO_RETURN:
      error = asio::error::eof;
      return step::failed;
    default:
      error = ssl_error();
      return step::failed;
  }
}

std::error_code tls_stream::send_pending_now() {
  if (output_.empty()) return {};
  bool would_block = false;
  std::error_code error;
  const std::size_t sent = send_now(socket_, output_, would_block, error);
  if (error) return error;
  if (sent == output_.size()) {
    release(output_);  // an idle connection keeps no output buffer
  } else {
    output_.erase(0, sent);
  }
  return {};
}

awaitable<std::error_code> tls_stream::flush() {
  for (;;) {
    const std::error_code error = send_pending_now();
    if (error) co_return error;
    if (output_.empty()) co_return std::error_code();
    const std::tuple<std::error_code> waited = co_await socket_.async_wait(tcp::socket::wait_write, as_result);
    if (std::get<0>(waited)) co_return std::get<0>(waited);
  }
}

awaitable<std::error_code> tls_stream::handshake() {
  bool fresh = false;  // input_ came from the socket in this iteration
  for (;;) {
    if (!fresh) use_pending_input();
    fresh = false;
    ERR_clear_error();
    const int ret = SSL_do_handshake(ssl_);
    const bool starved = input_size_ == 0;
    keep_unread_input();
    std::error_code error;
    const step next = result_of(ret, error);
    if (next == step::failed) {
      send_pending_now();  // the alert, if the socket takes it
      co_return error;
    }
    if (next == step::want_read && !starved) co_return std::make_error_code(std::errc::protocol_error);
    // Our flight must be out before we wait for the peer's.
    const std::error_code flushed = co_await flush();
    if (flushed || next == step::done) co_return flushed;
    for (;;) {
      bool would_block = false;
      const std::size_t n = receive_now(socket_, receive_buffer(), would_block, error);
      if (n > 0) {
        use_received_input(n);
        fresh = true;
        break;
      }
      if (error) co_return error;
      const std::tuple<std::error_code> waited = co_await socket_.async_wait(tcp::socket::wait_read, as_result);
      if (std::get<0>(waited)) co_return std::get<0>(waited);
    }
  }
}

awaitable<io_result> tls_stream::read_some(std::span<char> buffer) {
  const std::size_t limit = std::min(buffer.size(), static_cast<std::size_t>(INT_MAX));
  bool fresh = false;  // input_ came from the socket in this iteration
  for (;;) {
    if (!fresh) use_pending_input();
    fresh = false;
    // Decrypt everything available, up to the caller's buffer.
    std::size_t got = 0;
    std::error_code error;
    bool starved = true;
    while (got < limit) {
      ERR_clear_error();
      const int n = SSL_read(ssl_, buffer.data() + got, static_cast<int>(limit - got));
      const step next = result_of(n, error);
      if (next == step::want_read) starved = input_size_ == 0;
      if (next != step::done) break;
      got += static_cast<std::size_t>(n);
    }
    keep_unread_input();
    // The library asks for more only once it has taken all we had; anything
    // else would reorder the stream.
    if (!starved && got == 0 && !error) co_return io_result{std::make_error_code(std::errc::protocol_error), 0};
    // A post-handshake message may have made the library answer.
    const std::error_code sent = send_pending_now();
    if (got > 0) co_return io_result{{}, got};
    if (error) co_return io_result{error, 0};
    if (sent) co_return io_result{sent, 0};
    bool would_block = false;
    const std::size_t n = receive_now(socket_, receive_buffer(), would_block, error);
    if (n > 0) {
      use_received_input(n);
      fresh = true;
      continue;
    }
    if (error) co_return io_result{error, 0};
    if (!output_.empty()) {
      const std::error_code flushed = co_await flush();
      if (flushed) co_return io_result{flushed, 0};
    }
    const std::tuple<std::error_code> waited = co_await socket_.async_wait(tcp::socket::wait_read, as_result);
    if (std::get<0>(waited)) co_return io_result{std::get<0>(waited), 0};
  }
}

awaitable<std::error_code> tls_stream::write_all(std::string_view bytes) {
  // Encrypting a bulk write whole would hold all of its ciphertext at once
  // and re-copy the unsent rest after every partial send; a few records at
  // a time keep both bounded.
  constexpr std::size_t chunk = 64 * 1024;
  while (!bytes.empty()) {
    ERR_clear_error();
    const int n = SSL_write(ssl_, bytes.data(), static_cast<int>(std::min(bytes.size(), chunk)));
    if (n <= 0) {
      std::error_code error;
      result_of(n, error);
      if (!error) error = std::make_error_code(std::errc::protocol_error);
      co_return error;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
    if (bytes.empty()) break;
    const std::error_code flushed = co_await flush();
    if (flushed) co_return flushed;
  }
  if (close_after_write_ && !shut_down_) {
    shut_down_ = true;
    SSL_shutdown(ssl_);
  }
  const std::error_code flushed = co_await flush();
  co_return flushed;
}

void tls_stream::shutdown() noexcept {
  if (shut_down_) return;
  shut_down_ = true;
  ERR_clear_error();
  if (SSL_shutdown(ssl_) < 0) return;
  send_pending_now();
}

}  // namespace smtpguard::net
