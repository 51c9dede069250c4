#include "tls/server_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <stdexcept>

namespace smtpguard::tls {
namespace {

std::string last_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0) return "unknown error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof buffer);
  ERR_clear_error();
  return buffer;
}

// TLS 1.2 suites for clients that cannot do 1.3: ECDHE only (forward
// secrecy), AEAD only. TLS 1.3 suites are fixed by BoringSSL and all strong.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

}  // namespace

std::shared_ptr<asio::ssl::context> make_server_context(const tls_config& config) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();

  const uint16_t minimum = config.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx, minimum) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
    throw std::runtime_error("tls: cannot set protocol versions: " + last_error());
  if (!SSL_CTX_set_strict_cipher_list(ctx, tls12_ciphers))
    throw std::runtime_error("tls: cannot set cipher list: " + last_error());
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  // Idle connections should not keep 2 x 16 KiB record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const uint8_t*>("smtpguard"), 9);

  if (config.certificates.empty()) throw std::runtime_error("tls: no certificate configured");
  const auto& first = config.certificates.front();
  if (SSL_CTX_use_certificate_chain_file(ctx, first.cert.c_str()) != 1)
    throw std::runtime_error(first.cert + ": cannot load certificate chain: " + last_error());
  if (SSL_CTX_use_PrivateKey_file(ctx, first.key.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error(first.key + ": cannot load private key: " + last_error());
  if (SSL_CTX_check_private_key(ctx) != 1)
    throw std::runtime_error(first.key + ": private key does not match " + first.cert);
  return context;
}

connection_info describe(SSL* ssl) {
  connection_info info;
  if (!ssl) return info;
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) info.cipher = SSL_CIPHER_standard_name(cipher);
  return info;
}

}  // namespace smtpguard::tls
