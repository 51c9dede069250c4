#pragma once
// TLS on a TCP socket, with BoringSSL driven directly through a memory BIO
// of our own rather than a BIO pair behind fixed buffers. Ciphertext is read
// into a per-thread buffer and decrypted at once, so a connection keeps no
// buffer of its own while it waits: an idle session costs the SSL object
// and little else (BoringSSL releases its record buffers when empty).
#include <openssl/ssl.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "net/asio_fwd.hpp"
#include "net/socket_io.hpp"

namespace smtpguard::net {

enum class tls_role { server, client };

class tls_stream {
 public:
  /// The connection holds a reference to `context`.
  tls_stream(tcp::socket socket, SSL_CTX* context, tls_role role = tls_role::server);
  ~tls_stream();
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  SSL* native_handle() noexcept { return ssl_; }
  tcp::socket& socket() noexcept { return socket_; }

  awaitable<std::error_code> handshake();
  /// Decrypted bytes, at most buffer.size(); eof after the peer's close_notify
  /// or close.
  awaitable<io_result> read_some(std::span<char> buffer);
  /// Received bytes not yet returned by read_some(): a wait for the socket
  /// would not see them.
  bool has_buffered_input() const noexcept { return !pending_.empty() || SSL_pending(ssl_) > 0; }
  awaitable<std::error_code> write_all(std::string_view bytes);
  /// Sends close_notify if the socket takes it now; never waits for the peer's.
  void shutdown() noexcept;
  /// The next write_all() ends with close_notify, in the same packet.
  void close_after_next_write() noexcept { close_after_write_ = true; }

  // The BIO's side (called from inside BoringSSL).
  int bio_read(char* out, int length) noexcept;
  int bio_write(const char* data, int length) noexcept;

 private:
  enum class step { done, want_read, failed };
  step result_of(int ret, std::error_code& error);
  // Where the BIO reads from: what an earlier call left over, or bytes just
  // received into the thread's buffer; keep_unread_input() saves the rest.
  void use_pending_input() noexcept;
  void use_received_input(std::size_t size) noexcept;
  void keep_unread_input();
  std::error_code send_pending_now();
  awaitable<std::error_code> flush();

  tcp::socket socket_;
  SSL* ssl_ = nullptr;
  // The input the BIO reads from: either pending_ (bytes a previous call did
  // not get to) or the thread's receive buffer, valid only until we suspend.
  const char* input_ = nullptr;
  std::size_t input_size_ = 0;
  bool input_is_pending_ = false;
  std::string pending_;  // ciphertext received, not yet given to the TLS library
  std::string output_;   // ciphertext produced, not yet taken by the socket
  bool close_after_write_ = false;
  bool shut_down_ = false;
};

/// Stream-agnostic calls used by the line I/O layer.
inline awaitable<io_result> read_some(tls_stream& stream, std::span<char> buffer) { return stream.read_some(buffer); }
inline bool has_buffered_input(const tls_stream& stream) noexcept { return stream.has_buffered_input(); }
inline bool has_buffered_input(const tcp::socket&) noexcept { return false; }
inline awaitable<std::error_code> write_all(tls_stream& stream, std::string_view bytes) {
  return stream.write_all(bytes);
}
inline tcp::socket& lowest_socket(tls_stream& stream) noexcept { return stream.socket(); }
inline tcp::socket& lowest_socket(tcp::socket& socket) noexcept { return socket; }
/// Lets the goodbye reply and the end of the connection leave together.
inline void close_after_next_write(tls_stream& stream) noexcept { stream.close_after_next_write(); }
inline void close_after_next_write(tcp::socket&) noexcept {}

}  // namespace smtpguard::net
