#pragma once
// SCRAM-SHA-256 stored credentials (RFC 5802 section 3, RFC 7677): a salt, an
// iteration count and two keys derived from the password. They let the
// server check a client's proof and prove itself in return, yet neither
// reveals the password nor lets their holder log in as the user.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace smtpguard::auth {

/// A SHA-256 sized key, and HMAC-SHA-256 with it: the step RFC 5802's
/// formulas repeat.
using scram_key = std::array<std::uint8_t, 32>;
scram_key scram_hmac(const scram_key& key, std::string_view text);

struct scram_secret {
  std::uint32_t iterations = 0;
  std::string salt;                           ///< raw octets
  scram_key stored_key{};  ///< H(ClientKey)
  scram_key server_key{};  ///< HMAC(SaltedPassword, "Server Key")
};

/// RFC 7677 section 4 asks for at least 4096 iterations; so do PostgreSQL
/// and Dovecot by default.
constexpr std::uint32_t scram_default_iterations = 4096;
constexpr std::uint32_t scram_min_iterations = 4096;
/// Every client pays the iterations at each login: far above this is a
/// mistake, not a stronger secret.
constexpr std::uint32_t scram_max_iterations = 10'000'000;

/// Derives the keys. `password` must already be SASLprepped (see saslprep).
scram_secret make_scram_secret(std::string_view password, std::string_view salt, std::uint32_t iterations);
/// As above with a fresh 16-octet salt from the CSPRNG.
scram_secret make_scram_secret(std::string_view password, std::uint32_t iterations);

/// RFC 5803's form, as PostgreSQL and LDAP servers store it:
/// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", base64 fields.
std::string scram_secret_to_text(const scram_secret& secret);
/// Reads RFC 5803's form, and the one Dovecot (`doveadm pw -s SCRAM-SHA-256`)
/// and GNU SASL (`gsasl --mkpasswd`) print:
/// "{SCRAM-SHA-256}<iterations>,<salt>,<StoredKey>,<ServerKey>". nullopt when
/// malformed or outside [scram_min_iterations, scram_max_iterations].
std::optional<scram_secret> scram_secret_from_text(std::string_view text);

/// SASLprep (RFC 4013) through libidn; nullopt when the text holds a
/// character the profile prohibits (controls, for one), or is not UTF-8.
std::optional<std::string> saslprep(std::string_view text);

}  // namespace smtpguard::auth
