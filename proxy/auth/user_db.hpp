#pragma once
// The users file (JSON): {"users": [{"name", "password", "cram_md5",
// "scram_sha256", "digest_md5", "senders", "client_certificates",
// "relay_by_certificate", "message_budget", "recipient_budget"}]}.
#include <array>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "auth/passwords.hpp"
#include "auth/scram_secret.hpp"

namespace smtpguard::auth {

struct user_record {
  std::string name;
  std::string password_hash;                  ///< crypt(3) string; empty: no password login
  std::optional<cram_md5_context> cram_md5;   ///< absent: CRAM-MD5 refused for this user
  std::optional<scram_secret> scram_sha256;   ///< absent: SCRAM-SHA-256 fails for this user
  /// MD5(user:realm:password) for auth.realm; absent: DIGEST-MD5 fails for this user.
  std::optional<std::array<std::uint8_t, 16>> digest_md5;
  std::vector<std::string> senders;           ///< "a@b" exact, "@b" whole domain; empty: any sender
  /// Verified client certificates that are this user: "cn:NAME", "email:ADDRESS", "sha256:HEX".
  std::vector<std::string> client_certificates;
  bool relay_by_certificate = false;  ///< such a certificate alone permits relaying (no AUTH)
  /// This user's own limits.max_messages_per_user / max_recipients_per_user
  /// (a bulk sender needs more than the people do); 0: no limit; unset: the configuration's.
  std::optional<int> message_budget;
  std::optional<int> recipient_budget;
};

class user_db {
 public:
  /// Parses a users document. Throws std::runtime_error whose message names
  /// the JSON path, e.g. "users[2].cram_md5: expected 64 hex digits".
  static user_db parse(const nlohmann::json& document);
  /// Reads and parses a file; errors are prefixed with the file name.
  static user_db load(const std::string& path);

  const user_record* find(std::string_view name) const;
  /// Distinct for every parsed users file in this process: what a credential
  /// cache keys on, so that a reload forgets everything verified before it.
  std::uint64_t generation() const noexcept { return generation_; }
  std::size_t size() const noexcept { return users_.size(); }
  /// How many users have no SCRAM-SHA-256 secret (and so cannot use it).
  std::size_t without_scram_secret() const noexcept;

  /// Verifies a PLAIN/LOGIN password. Slow: call off the I/O threads. An
  /// unknown user costs what a wrong password for a real user costs (a dummy
  /// hash of one of the users' cost classes is checked).
  bool verify_password(std::string_view user, std::string_view password) const;
  /// Verifies a CRAM-MD5 digest (16 raw octets) in constant time.
  bool verify_cram_md5(std::string_view user, std::string_view challenge, std::string_view digest) const;
  /// The user's SCRAM-SHA-256 secret. A user without one, or an unknown
  /// name, gets a made-up secret that no password matches, with a salt
  /// stable per name and the iteration count real users have, so the
  /// server's first SCRAM message does not tell which names are real.
  scram_secret scram_secret_for(std::string_view user) const;
  /// The user's DIGEST-MD5 secret; for a user without one, or an unknown
  /// name, a made-up one that no password matches.
  std::array<std::uint8_t, 16> digest_md5_secret_for(std::string_view user) const;
  /// The user a verified client certificate belongs to, or nullptr. A SHA-256
  /// fingerprint entry wins over an e-mail entry, which wins over a CN entry.
  const user_record* find_by_certificate(std::string_view sha256, std::span<const std::string> emails,
                                         std::string_view common_name) const;
  /// Some user has a message_budget (or recipient_budget) of its own, which
  /// is kept even when the configuration sets no such limit.
  bool has_message_budgets() const noexcept { return message_budgets_; }
  bool has_recipient_budgets() const noexcept { return recipient_budgets_; }

  /// MAIL FROM ownership: exact address or "@domain" entries, case-insensitive
  /// on the domain; an empty list allows any sender.
  bool sender_allowed(std::string_view user, std::string_view address) const;

 private:
  const std::string& dummy_hash_for(std::string_view user) const;
  /// HMAC-SHA-256 of `purpose` and `user` under dummy_key_.
  std::array<std::uint8_t, 32> keyed_hash(std::string_view purpose, std::string_view user) const;

  std::unordered_map<std::string, user_record> users_;
  std::uint64_t generation_ = 0;
  bool message_budgets_ = false;
  bool recipient_budgets_ = false;
  std::vector<std::string> dummy_hashes_;    ///< one per cost class of the users' hashes
  std::vector<std::size_t> dummy_for_user_;  ///< per user with a usable hash: its class's dummy
  std::array<std::uint8_t, 32> dummy_key_{};
  std::uint32_t dummy_scram_iterations_ = scram_default_iterations;
  // "sha256:...", "email:...", "cn:..." (normalised) -> user name.
  std::unordered_map<std::string, std::string> certificate_owners_;
};

/// `smtpguard passwd [--scheme yescrypt|bcrypt|sha512-crypt] [--user NAME]`:
/// reads one password line from `in`, prints one users-file entry as JSON to
/// `out`. Returns the process exit code; errors go to `err`.
int run_passwd_command(int argc, char** argv, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace smtpguard::auth
