#pragma once
// Server-side TLS contexts. Everything BoringSSL-specific lives under tls/.
#include <asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "config.hpp"

namespace smtpguard::tls {

/// One context shared by every thread (SSL_CTX is thread-safe once built):
/// TLS 1.2 minimum (or 1.3), forward-secret AEAD suites only, session tickets
/// with BoringSSL's automatically rotating keys, and every configured
/// certificate. With several, each handshake gets an ECDSA one if the client
/// can verify it (and, in TLS 1.2, offers an ECDHE-ECDSA suite), else RSA.
/// Throws std::runtime_error naming the file that failed.
std::shared_ptr<asio::ssl::context> make_server_context(const tls_config& config);

/// "TLSv1.3" and "TLS_AES_128_GCM_SHA256" for an established connection.
struct connection_info {
  std::string version;
  std::string cipher;
};
connection_info describe(SSL* ssl);

}  // namespace smtpguard::tls
