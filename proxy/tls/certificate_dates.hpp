#pragma once
// Validity periods of the certificates an operator must renew in time: every
// served leaf and the client-certificate CA bundle. They feed the expiry
// gauges and /readyz.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"

namespace smtpguard::tls {

struct certificate_dates {
  std::string role;     ///< "server" (a served leaf) or "client_ca" (one CA of the bundle)
  std::string file;
  std::string subject;  ///< RFC 2253, e.g. "CN=mail.example.org"
  std::int64_t not_before = 0;  ///< Unix seconds
  std::int64_t not_after = 0;   ///< Unix seconds
};

/// Reads the dates from the configured files: each served leaf and each CA
/// of the client-certificate bundle. Files that cannot be read are left out:
/// loading the TLS context reports those.
std::vector<certificate_dates> configured_certificate_dates(const tls_config& config);

/// The first served certificate that is not valid at `now` (Unix seconds), as
/// "<file> expired" or "<file> not yet valid"; nullopt when all are.
std::optional<std::string> invalid_served_certificate(const std::vector<certificate_dates>& dates,
                                                      std::int64_t now);

}  // namespace smtpguard::tls
