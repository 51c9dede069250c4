#pragma once
// The server's side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802,
// RFC 7677) without I/O: it parses the client's two messages, answers the
// first with the user's salt and iteration count, and checks the proof in the
// second against the stored key. The password never crosses the wire and is
// never stored. -PLUS also signs the TLS channel (RFC 5056), so a proof
// relayed by someone in the middle of the TLS connection does not verify.
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "auth/scram_secret.hpp"

namespace smtpguard::sasl {

/// The data of a channel binding type ("tls-exporter", "tls-unique") for
/// this connection, or nullopt when the connection has none of that type.
using channel_binding_lookup = std::function<std::optional<std::string>(std::string_view type)>;

/// How the exchange stands towards channel binding.
struct scram_binding {
  bool plus = false;          ///< the mechanism is SCRAM-SHA-256-PLUS: the client must bind
  bool plus_offered = false;  ///< -PLUS was advertised, so a client saying "y" was misled
  channel_binding_lookup data;
};

class scram_server {
 public:
  /// The stored secret of a user. For a user who has none, or does not
  /// exist, it must return a made-up one that is stable per name, so that
  /// the server's first answer does not tell which names are real.
  using secret_lookup = std::function<auth::scram_secret(std::string_view user)>;

  /// `nonce`: the server's part of the nonce (printable, no ','; see make_scram_nonce).
  scram_server(secret_lookup lookup, std::string nonce, scram_binding binding = {});

  /// client-first-message -> server-first-message; nullopt when malformed,
  /// when its channel binding flag does not fit the mechanism and the offer
  /// (or names a type this connection lacks), or when it carries a mandatory
  /// extension.
  std::optional<std::string> first(std::string_view client_first);

  enum class verdict { malformed, wrong_proof, verified };
  /// client-final-message. After `verified`, server_final() is the
  /// server-final-message ("v=..."), the server's proof of knowing the key.
  verdict final(std::string_view client_final);

  const std::string& user() const noexcept { return user_; }
  /// Empty unless the client asked to act as someone other than `user()`.
  const std::string& authzid() const noexcept { return authzid_; }
  const std::string& server_final() const noexcept { return server_final_; }

 private:
  secret_lookup lookup_;
  scram_binding binding_;
  std::string nonce_;         ///< client's then server's part, once first() has run
  std::string gs2_header_;    ///< "n,," or "p=tls-exporter,a=...,": what c= starts with
  std::string binding_data_;  ///< for -PLUS: what c= carries after the header
  std::string auth_message_;  ///< client-first-bare "," server-first, until final() completes it
  std::string user_;
  std::string authzid_;
  std::string server_final_;
  auth::scram_secret secret_;
  bool finished_ = false;  ///< final() has run: one proof per exchange
};

/// 18 octets from the CSPRNG, base64: 24 characters, none of them ','.
std::string make_scram_nonce();

}  // namespace smtpguard::sasl
