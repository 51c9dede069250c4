#pragma once
// Server side of one SASL exchange (RFC 4954 section 4) as a pure state
// machine: the session feeds it client lines and sends what it returns.
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "sasl/digest_md5.hpp"
#include "sasl/mechanism.hpp"
#include "sasl/scram.hpp"

namespace smtpguard::sasl {

/// What the session must do next.
struct step {
  enum class kind {
    challenge,  ///< send "334 " + text, read one more line
    complete,   ///< credentials gathered: verify proof()
    cancelled,  ///< client sent "*": reply 501 5.0.0
    malformed,  ///< bad base64 or bad structure: reply 501 5.5.2
  };
  kind what = kind::malformed;
  std::string text;  ///< base64 challenge for kind::challenge
};

/// PLAIN / LOGIN: a password to check against the user's crypt(3) hash.
/// `authzid` is non-empty only when PLAIN carried one different from the user.
struct password_proof {
  std::string authzid;
  std::string user;
  std::string password;
};
/// CRAM-MD5: the raw 16-octet digest the client computed over `challenge`.
struct cram_md5_proof {
  std::string user;
  std::string challenge;
  std::string digest;  ///< 16 raw octets (decoded from the client's lowercase hex)
};
/// EXTERNAL (RFC 4422 appendix A): the identity was established outside SASL
/// (a verified client certificate); the client may only name who it acts as.
struct external_proof {
  std::string user;  ///< the requested authorization identity; empty: the certificate's own
};
/// SCRAM-SHA-256 and -PLUS: the exchange checks the proof itself against the stored
/// key (cheap: two HMACs and a hash) and has already proved the server to
/// the client when `verified` is true.
struct scram_proof {
  std::string authzid;  ///< non-empty only when different from the user
  std::string user;
  bool verified = false;
};
/// DIGEST-MD5: checked by the exchange too, against H(user:realm:password).
struct digest_md5_proof {
  std::string authzid;  ///< non-empty only when different from the user
  std::string user;
  bool verified = false;
};
using proof = std::variant<password_proof, cram_md5_proof, external_proof, scram_proof, digest_md5_proof>;

/// What SCRAM-SHA-256 needs from the session: the users' stored secrets,
/// the server's half of the nonce (make_scram_nonce()), and the TLS
/// connection's channel binding (`binding.plus` is set by the exchange).
struct scram_setup {
  scram_server::secret_lookup lookup;
  std::string nonce;
  scram_binding binding;
};

/// What DIGEST-MD5 needs: the users' secrets for `realm`, and a fresh nonce.
struct digest_md5_setup {
  digest_md5_server::secret_lookup lookup;
  std::string realm;
  std::string nonce;
};

class server_exchange {
 public:
  /// `cram_challenge` is the full "<...@host>" string, used only for CRAM-MD5;
  /// `scram` is used only for SCRAM-SHA-256 and -PLUS, `digest` only for DIGEST-MD5.
  explicit server_exchange(mechanism m, std::string cram_challenge = {}, scram_setup scram = {},
                           digest_md5_setup digest = {});
  ~server_exchange();
  server_exchange(const server_exchange&) = delete;
  server_exchange& operator=(const server_exchange&) = delete;

  /// Starts the exchange. `initial_response` is the AUTH command's second
  /// argument if present ("=" means an empty initial response, RFC 4954).
  step start(std::string_view initial_response, bool has_initial_response);
  /// Feeds the client's reply to the last challenge (one line, no CRLF).
  step respond(std::string_view line);

  /// Valid after a step of kind complete.
  const proof& credentials() const noexcept { return proof_; }
  mechanism which() const noexcept { return mechanism_; }

 private:
  mechanism mechanism_;
  std::string cram_challenge_;
  int stage_ = 0;
  proof proof_;
  /// Only for SCRAM-SHA-256, and on the heap: the exchange lives in a
  /// coroutine frame, and frames are recycled by size.
  std::unique_ptr<scram_server> scram_;
  std::unique_ptr<digest_md5_server> digest_;  ///< only for DIGEST-MD5
};

/// A fresh CRAM-MD5 challenge "<random.unixtime@hostname>" (RFC 2195), with
/// 64 bits from the CSPRNG.
std::string make_cram_md5_challenge(std::string_view hostname);

}  // namespace smtpguard::sasl
