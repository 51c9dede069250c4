#pragma once
// Channel bindings (RFC 5056) of an established TLS connection, for
// SCRAM-SHA-256-PLUS: values both ends compute from the handshake's secrets
// and that differ on every connection, so an exchange signed over them cannot
// be replayed on another connection, nor relayed through one that someone in
// the middle terminates.
#include <optional>
#include <string>
#include <string_view>

#include "tls/boringssl.hpp"

namespace smtpguard::tls {

/// True when the connection has a binding worth offering -PLUS for:
/// tls-exporter needs TLS 1.3 or TLS 1.2 with the extended master secret
/// (RFC 9266 section 3; without it a third party can make two connections
/// share their secrets).
bool can_bind(const SSL* ssl);

/// The binding's data for `type`: "tls-exporter" (RFC 9266: 32 octets
/// exported with the label "EXPORTER-Channel-Binding") on any connection
/// can_bind accepts, or "tls-unique" (RFC 5929: the first Finished message)
/// on TLS 1.2 with the extended master secret. nullopt otherwise.
std::optional<std::string> channel_binding(SSL* ssl, std::string_view type);

}  // namespace smtpguard::tls
