#pragma once
// Server certificates loaded once at startup and the rule that picks one for
// a ClientHello. Kept apart from the SSL_CTX so the rule can be tested without
// a handshake.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "tls/boringssl.hpp"

namespace smtpguard::tls {

enum class key_kind { ec_p256, ec_p384, rsa };

/// A certificate chain and its private key. Immutable after loading, so any
/// number of handshakes on any thread may read it at once.
class credential {
 public:
  /// Reads and checks one configured pair: the chain parses, the key parses,
  /// the key belongs to the leaf, the key is EC P-256/P-384 or RSA. Throws
  /// std::runtime_error naming the offending file.
  static credential load(const certificate_config& config);

  key_kind kind() const { return kind_; }
  bool is_ecdsa() const { return kind_ != key_kind::rsa; }
  const std::string& cert_file() const { return cert_file_; }
  /// subjectAltName dNSName entries of the leaf, lowercased.
  const std::vector<std::string>& dns_names() const { return dns_names_; }
  /// The names SNI is matched against, lowercased: the configured ones, or
  /// dns_names() when none are configured.
  const std::vector<std::string>& server_names() const { return server_names_; }
  /// Whether a client asking for `server_name` (any case) should get this one.
  bool answers_for(std::string_view server_name) const;

  /// DER certificates, leaf first, in the shape SSL_*_set_chain_and_key take.
  CRYPTO_BUFFER* const* chain_data() const { return chain_pointers_.data(); }
  std::size_t chain_size() const { return chain_pointers_.size(); }
  EVP_PKEY* key() const { return key_.get(); }

 private:
  credential() = default;

  std::string cert_file_;
  key_kind kind_ = key_kind::rsa;
  std::vector<std::string> dns_names_;
  std::vector<std::string> server_names_;
  std::vector<bssl::UniquePtr<CRYPTO_BUFFER>> chain_;
  std::vector<CRYPTO_BUFFER*> chain_pointers_;  // borrowed from chain_
  bssl::UniquePtr<EVP_PKEY> key_;
};

/// Whether the SNI `name` matches `pattern`, ignoring case: equal, or for
/// "*.example.org" exactly one non-empty label followed by ".example.org"
/// (as RFC 6125 6.4.3 allows wildcards: whole leftmost label only).
bool server_name_matches(std::string_view pattern, std::string_view name);

/// A ClientHello list of 16-bit values (cipher suites, signature algorithms,
/// groups), read in place from the wire bytes.
class u16_list {
 public:
  u16_list() = default;
  explicit u16_list(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
  bool contains(std::uint16_t value) const;
  bool contains_any(std::span<const std::uint16_t> values) const;

 private:
  std::span<const std::uint8_t> bytes_;
};

/// What a ClientHello offers that decides which certificate can serve it.
struct client_offer {
  bool tls13 = false;                            ///< the handshake will be TLS 1.3
  std::optional<u16_list> signature_algorithms;  ///< absent: TLS 1.2's implied SHA-1 pair
  std::optional<u16_list> supported_groups;      ///< absent: any curve (RFC 8422 5.1.1)
  u16_list cipher_suites;
  /// SNI host_name as the client sent it (any case); empty when none was sent.
  /// Borrowed from the handshake, so valid only while the hello is examined.
  std::string_view server_name;
};

/// The configured TLS 1.2 suites, split by the key their authentication needs.
struct tls12_suites {
  std::vector<std::uint16_t> ecdsa;
  std::vector<std::uint16_t> rsa;
};

/// Whether a handshake with `offer` can complete using `cred`: the client can
/// verify a signature we would make with the key and, for TLS 1.2, offers one
/// of our suites for that key type.
bool can_serve(const credential& cred, const client_offer& offer, const tls12_suites& suites);

/// Every configured credential, in preference order: ECDSA before RSA (smaller
/// handshakes, cheaper signatures), configuration order within each. The
/// first one is the default for clients without SNI or with an unknown name.
class credential_set {
 public:
  credential_set(std::vector<credential> credentials, tls12_suites suites);

  std::span<const credential> all() const { return credentials_; }
  const credential& preferred() const { return credentials_.front(); }

  /// The first credential that answers for the offer's server name and can
  /// serve it; failing that (no SNI, an unknown name, or only certificates of
  /// a key type the client cannot use), the first one that can serve it at
  /// all; nullptr when none can (the handshake will then fail however we
  /// answer).
  const credential* select(const client_offer& offer) const;

 private:
  std::vector<credential> credentials_;
  tls12_suites suites_;
};

}  // namespace smtpguard::tls
