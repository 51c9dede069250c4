#pragma once
#include <optional>
#include <string_view>

namespace smtpguard::sasl {

enum class mechanism { plain, login, cram_md5, external, scram_sha_256, scram_sha_256_plus, digest_md5 };

/// Case-insensitive lookup of "PLAIN", "LOGIN", "CRAM-MD5", "EXTERNAL", "SCRAM-SHA-256",
/// "SCRAM-SHA-256-PLUS", "DIGEST-MD5".
std::optional<mechanism> parse_mechanism(std::string_view name);
/// Canonical upper-case name.
std::string_view mechanism_name(mechanism m);

}  // namespace smtpguard::sasl
