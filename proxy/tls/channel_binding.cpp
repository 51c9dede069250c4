#include "tls/channel_binding.hpp"

#include <cstdint>

namespace smtpguard::tls {
namespace {

constexpr std::string_view exporter_label = "EXPORTER-Channel-Binding";
constexpr std::size_t exporter_size = 32;
// A Finished message is 12 octets in TLS 1.2 with the usual cipher suites.
constexpr std::size_t max_finished_size = 64;

}  // namespace

bool can_bind(const SSL* ssl) {
  // BoringSSL reports TLS 1.3 as having the extended master secret too.
  return ssl != nullptr && SSL_get_extms_support(ssl) == 1;
}

std::optional<std::string> channel_binding(SSL* ssl, std::string_view type) {
  if (!can_bind(ssl)) return std::nullopt;
  if (type == "tls-exporter") {
    std::string data(exporter_size, '\0');
    // No context: what GnuTLS, and OpenSSL-based servers, compute. In TLS
    // 1.3 an absent and an empty context are the same.
    if (!SSL_export_keying_material(ssl, reinterpret_cast<std::uint8_t*>(data.data()), data.size(),
                                    exporter_label.data(), exporter_label.size(), nullptr, 0, 0))
      return std::nullopt;
    return data;
  }
  // RFC 9266 section 3: tls-unique is not defined for TLS 1.3.
  if (type == "tls-unique" && SSL_version(ssl) == TLS1_2_VERSION) {
    std::string data(max_finished_size, '\0');
    std::size_t size = 0;
    if (!SSL_get_tls_unique(ssl, reinterpret_cast<std::uint8_t*>(data.data()), &size, data.size()))
      return std::nullopt;
    data.resize(size);
    return data;
  }
  return std::nullopt;
}

}  // namespace smtpguard::tls
