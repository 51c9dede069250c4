#pragma once
// The server's side of DIGEST-MD5 (RFC 2831) without I/O, authentication
// only (qop "auth"; no integrity or privacy layer). RFC 6331 made the
// mechanism historic: it is here for old clients, off unless configured.
// The stored secret is H(user:realm:password), the form Dovecot keeps.
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace smtpguard::sasl {

/// MD5(user ":" realm ":" password), 16 octets.
using digest_md5_secret = std::array<std::uint8_t, 16>;

/// The secret as RFC 2831 section 2.1.2.1 derives it: with charset=utf-8,
/// user, realm and password go through ISO 8859-1 when all three can.
digest_md5_secret make_digest_md5_secret(std::string_view user, std::string_view realm, std::string_view password);

class digest_md5_server {
 public:
  /// The user's secret for `realm`; for a user without one, or an unknown
  /// name, a made-up one no password matches.
  using secret_lookup = std::function<digest_md5_secret(std::string_view user)>;

  /// `nonce`: fresh per exchange, without '"' or '\\' (see make_scram_nonce).
  /// `service`: what digest-uri must name ("smtp/host"), so that a response
  /// made for another protocol's server is refused.
  digest_md5_server(secret_lookup lookup, std::string realm, std::string nonce, std::string service = "smtp");

  /// The server's first challenge.
  std::string challenge() const;

  enum class verdict { malformed, wrong_response, verified };
  /// The client's digest-response. After `verified`, rspauth() is the
  /// server's proof of knowing the secret ("rspauth=...").
  verdict respond(std::string_view response);

  const std::string& user() const noexcept { return user_; }
  /// Empty unless the client asked to act as someone other than `user()`.
  const std::string& authzid() const noexcept { return authzid_; }
  const std::string& rspauth() const noexcept { return rspauth_; }

 private:
  secret_lookup lookup_;
  std::string realm_;
  std::string nonce_;
  std::string service_;
  std::string user_;
  std::string authzid_;
  std::string rspauth_;
  bool answered_ = false;
};

}  // namespace smtpguard::sasl
