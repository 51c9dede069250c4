#pragma once
#include <optional>
#include <string_view>

namespace smtpguard::sasl {

enum class mechanism { plain, login, cram_md5, external };

/// Case-insensitive lookup of "PLAIN", "LOGIN", "CRAM-MD5", "EXTERNAL".
std::optional<mechanism> parse_mechanism(std::string_view name);
/// Canonical upper-case name.
std::string_view mechanism_name(mechanism m);

}  // namespace smtpguard::sasl
