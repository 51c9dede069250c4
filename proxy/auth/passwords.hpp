#pragma once
// Password hashing and verification: crypt(3) through libxcrypt, CRAM-MD5
// through HMAC-MD5 precomputed contexts (never the plaintext).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace smtpguard::auth {

/// "yescrypt" ($y$), "bcrypt" ($2b$), "sha512-crypt" ($6$).
enum class hash_scheme { yescrypt, bcrypt, sha512_crypt };
std::optional<hash_scheme> parse_hash_scheme(std::string_view name);

/// Hashes with a fresh salt from the OS entropy source. Throws std::runtime_error on failure.
std::string hash_password(std::string_view password, hash_scheme scheme);

/// Slow (by design). Constant-time comparison of the recomputed hash.
/// False for malformed hashes and for "*"/"!" locked entries.
bool verify_password_hash(std::string_view password, std::string_view crypt_hash);

/// HMAC-MD5 key schedule after the ipad and opad blocks: the four MD5 state
/// words of the outer then the inner context, little-endian (the layout of
/// Dovecot's CRAM-MD5 scheme, so its stored secrets can be reused).
using cram_md5_context = std::array<std::uint8_t, 32>;
cram_md5_context make_cram_md5_context(std::string_view password);
std::string cram_md5_context_to_hex(const cram_md5_context& ctx);
std::optional<cram_md5_context> cram_md5_context_from_hex(std::string_view hex);
/// HMAC-MD5(password, challenge) computed from the precomputed context: 16 raw octets.
std::array<std::uint8_t, 16> cram_md5_digest(const cram_md5_context& ctx, std::string_view challenge);

/// Constant-time equality (length is not secret).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace smtpguard::auth
