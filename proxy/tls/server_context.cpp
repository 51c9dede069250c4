#include "tls/server_context.hpp"

#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/nid.h>
#include <openssl/ssl.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "tls/credentials.hpp"
#include "tls/errors.hpp"

namespace smtpguard::tls {
namespace {

// TLS 1.2 suites for clients that cannot do 1.3: ECDHE only (forward
// secrecy), AEAD only. TLS 1.3 suites are fixed by BoringSSL and all strong.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The credential set hangs off the SSL_CTX so that it lives exactly as long as
// the context and every SSL still referencing it.
void free_credentials(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<credential_set*>(ptr);
}

int credentials_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_credentials);
  return index;
}

tls12_suites configured_suites(SSL_CTX* ctx) {
  tls12_suites suites;
  const STACK_OF(SSL_CIPHER)* ciphers = SSL_CTX_get_ciphers(ctx);
  for (size_t i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    const SSL_CIPHER* cipher = sk_SSL_CIPHER_value(ciphers, i);
    const uint16_t id = SSL_CIPHER_get_protocol_id(cipher);
    switch (SSL_CIPHER_get_auth_nid(cipher)) {
      case NID_auth_ecdsa:
        suites.ecdsa.push_back(id);
        break;
      case NID_auth_rsa:
        suites.rsa.push_back(id);
        break;
      default:
        break;
    }
  }
  return suites;
}

std::optional<u16_list> u16_extension(const SSL_CLIENT_HELLO* hello, uint16_t type, bool u8_length) {
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (!SSL_early_callback_ctx_extension_get(hello, type, &data, &length)) return std::nullopt;
  CBS body;
  CBS list;
  CBS_init(&body, data, length);
  const bool ok = u8_length ? CBS_get_u8_length_prefixed(&body, &list) : CBS_get_u16_length_prefixed(&body, &list);
  // A malformed list offers nothing; BoringSSL rejects the hello itself later.
  if (!ok) return u16_list{};
  return u16_list({CBS_data(&list), CBS_len(&list)});
}

client_offer read_offer(const SSL_CLIENT_HELLO* hello) {
  client_offer offer;
  // The version is negotiated after this callback. Our maximum is always 1.3,
  // so BoringSSL will pick it exactly when supported_versions lists it.
  if (auto versions = u16_extension(hello, TLSEXT_TYPE_supported_versions, true))
    offer.tls13 = versions->contains(TLS1_3_VERSION);
  offer.signature_algorithms = u16_extension(hello, TLSEXT_TYPE_signature_algorithms, false);
  offer.supported_groups = u16_extension(hello, TLSEXT_TYPE_supported_groups, false);
  offer.cipher_suites = u16_list({hello->cipher_suites, hello->cipher_suites_len});
  // BoringSSL has already parsed and checked the server_name extension by now
  // (one host_name, no NUL bytes, rejecting the hello otherwise), so its
  // result is taken rather than parsing the extension a second time.
  if (const char* name = SSL_get_servername(hello->ssl, TLSEXT_NAMETYPE_host_name)) offer.server_name = name;
  return offer;
}

// Runs before BoringSSL chooses the version, cipher and signature algorithm,
// all of which it then derives from the key we install here. cert_cb would see
// the negotiated version but no longer the client's cipher list, which TLS 1.2
// needs. Only reads shared state; the choice is stored on the SSL itself.
ssl_select_cert_result_t select_certificate(const SSL_CLIENT_HELLO* hello) {
  SSL* ssl = hello->ssl;
  const auto* credentials =
      static_cast<const credential_set*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), credentials_index()));
  if (!credentials) return ssl_select_cert_success;
  const credential* chosen = credentials->select(read_offer(hello));
  // Nothing fits: keep the context's default and let BoringSSL send the alert.
  if (!chosen || chosen == &credentials->preferred()) return ssl_select_cert_success;
  if (!SSL_set_chain_and_key(ssl, chosen->chain_data(), chosen->chain_size(), chosen->key(), nullptr))
    return ssl_select_cert_error;
  return ssl_select_cert_success;
}

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
  std::vector<credential> loaded;
  loaded.reserve(config.certificates.size());
  for (const auto& certificate : config.certificates) loaded.push_back(credential::load(certificate));
  auto credentials = std::make_unique<credential_set>(std::move(loaded), configured_suites(ctx));

  // The preferred credential is the context default, so a single certificate
  // needs no per-handshake work and a choice equal to it costs nothing.
  const credential& preferred = credentials->preferred();
  if (!SSL_CTX_set_chain_and_key(ctx, preferred.chain_data(), preferred.chain_size(), preferred.key(), nullptr))
    throw std::runtime_error(preferred.cert_file() + ": cannot use certificate: " + last_error());
  if (credentials->all().size() == 1) return context;

  const int index = credentials_index();
  if (index < 0 || !SSL_CTX_set_ex_data(ctx, index, credentials.get()))
    throw std::runtime_error("tls: cannot attach certificates to the context: " + last_error());
  credentials.release();  // owned by ctx now, freed by free_credentials
  SSL_CTX_set_select_certificate_cb(ctx, select_certificate);
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
