#include "sasl/exchange.hpp"

#include <array>
#include <cstdint>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include <openssl/rand.h>

#include "auth/hex.hpp"
#include "sasl/base64.hpp"

namespace smtpguard::sasl {
namespace {

// Bounds on decoded fields: far above any real user name or password, low
// enough that a hostile client cannot make us hash megabytes.
constexpr std::size_t max_identity_size = 255;
constexpr std::size_t max_password_size = 1024;

// base64("Username:") and base64("Password:"): the de facto LOGIN prompts
// (draft-murchison-sasl-login); some clients match on the decoded text.
constexpr std::string_view login_user_prompt = "VXNlcm5hbWU6";
constexpr std::string_view login_password_prompt = "UGFzc3dvcmQ6";

constexpr std::size_t cram_md5_hex_size = 32;

// Values of server_exchange::stage_.
constexpr int stage_idle = 0;
constexpr int stage_plain_response = 1;
constexpr int stage_login_user = 2;
constexpr int stage_login_password = 3;
constexpr int stage_cram_md5_response = 4;
constexpr int stage_done = 5;
constexpr int stage_external_response = 6;
constexpr int stage_scram_first = 7;
constexpr int stage_scram_final = 8;
constexpr int stage_scram_acknowledged = 9;
constexpr int stage_digest_response = 10;
constexpr int stage_digest_acknowledged = 11;

step make_step(step::kind what, std::string text = {}) { return step{what, std::move(text)}; }

// The per-exchange transitions, kept out of the header so that it only shows
// the state the session can observe.
class transitions {
 public:
  transitions(int& stage, proof& out, const std::string& cram_challenge, scram_server* scram,
              digest_md5_server* digest)
      : stage_(stage), out_(out), cram_challenge_(cram_challenge), scram_(scram), digest_(digest) {}

  step finish(step::kind what) {
    stage_ = stage_done;
    if (what != step::kind::complete) out_ = password_proof{};
    return make_step(what);
  }

  // RFC 4616: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
  step plain_message(std::string_view message) {
    const auto first = message.find('\0');
    if (first == std::string_view::npos) return finish(step::kind::malformed);
    const auto second = message.find('\0', first + 1);
    if (second == std::string_view::npos) return finish(step::kind::malformed);
    if (message.find('\0', second + 1) != std::string_view::npos) return finish(step::kind::malformed);

    const std::string_view authzid = message.substr(0, first);
    const std::string_view authcid = message.substr(first + 1, second - first - 1);
    const std::string_view passwd = message.substr(second + 1);
    if (authcid.empty() || passwd.empty() || authcid.size() > max_identity_size ||
        authzid.size() > max_identity_size || passwd.size() > max_password_size)
      return finish(step::kind::malformed);

    password_proof p;
    // Clients that repeat their own name as authzid are not asking to act as
    // someone else; only a different authzid needs an authorization decision.
    if (authzid != authcid) p.authzid = authzid;
    p.user = authcid;
    p.password = passwd;
    out_ = std::move(p);
    return finish(step::kind::complete);
  }

  step login_user(std::string_view user) {
    if (user.empty() || user.size() > max_identity_size || user.find('\0') != std::string_view::npos)
      return finish(step::kind::malformed);
    password_proof p;
    p.user = user;
    out_ = std::move(p);
    stage_ = stage_login_password;
    return make_step(step::kind::challenge, std::string(login_password_prompt));
  }

  // A NUL could never match a crypt(3) hash (the phrase is a C string), and
  // PLAIN cannot carry one either.
  step login_password(std::string_view password) {
    if (password.empty() || password.size() > max_password_size ||
        password.find('\0') != std::string_view::npos)
      return finish(step::kind::malformed);
    std::get<password_proof>(out_).password = password;
    return finish(step::kind::complete);
  }

  step external_authzid(std::string_view authzid) {
    if (authzid.size() > max_identity_size || authzid.find('\0') != std::string_view::npos)
      return finish(step::kind::malformed);
    out_ = external_proof{std::string(authzid)};
    return finish(step::kind::complete);
  }

  // RFC 2195: response = user SP 32 lowercase hex digits. The user name may
  // itself contain spaces, so the digest is whatever follows the last one.
  step cram_md5_response(std::string_view response) {
    const auto space = response.rfind(' ');
    if (space == std::string_view::npos || space == 0) return finish(step::kind::malformed);
    const std::string_view user = response.substr(0, space);
    const std::string_view hex = response.substr(space + 1);
    if (user.size() > max_identity_size || user.find('\0') != std::string_view::npos ||
        hex.size() != cram_md5_hex_size)
      return finish(step::kind::malformed);

    std::array<std::uint8_t, cram_md5_hex_size / 2> digest{};
    if (!auth::from_hex(hex, digest)) return finish(step::kind::malformed);
    out_ = cram_md5_proof{std::string(user), cram_challenge_, std::string(digest.begin(), digest.end())};
    return finish(step::kind::complete);
  }

  step scram_first(std::string_view message) {
    const auto server_first = scram_->first(message);
    if (!server_first) return finish(step::kind::malformed);
    stage_ = stage_scram_final;
    return make_step(step::kind::challenge, base64_encode(*server_first));
  }

  // A wrong proof completes the exchange unverified: the session answers it
  // as any wrong password (delay, failure counts, 535), not as bad syntax.
  step scram_final(std::string_view message) {
    const auto verdict = scram_->final(message);
    if (verdict == scram_server::verdict::malformed) return finish(step::kind::malformed);
    out_ = scram_proof{scram_->authzid(), scram_->user(), false};
    if (verdict == scram_server::verdict::wrong_proof) return finish(step::kind::complete);
    // RFC 4954 section 4: data sent with success goes in one more 334,
    // which the client answers with an empty line.
    stage_ = stage_scram_acknowledged;
    return make_step(step::kind::challenge, base64_encode(scram_->server_final()));
  }

  step scram_acknowledged(std::string_view message) {
    if (!message.empty()) return finish(step::kind::malformed);
    std::get<scram_proof>(out_).verified = true;
    return finish(step::kind::complete);
  }

  // As SCRAM: a wrong response completes unverified (535), and the
  // server's proof goes in one more 334 the client answers with nothing.
  step digest_response(std::string_view message) {
    const auto verdict = digest_->respond(message);
    if (verdict == digest_md5_server::verdict::malformed) return finish(step::kind::malformed);
    out_ = digest_md5_proof{digest_->authzid(), digest_->user(), false};
    if (verdict == digest_md5_server::verdict::wrong_response) return finish(step::kind::complete);
    stage_ = stage_digest_acknowledged;
    return make_step(step::kind::challenge, base64_encode(digest_->rspauth()));
  }

  step digest_acknowledged(std::string_view message) {
    if (!message.empty()) return finish(step::kind::malformed);
    std::get<digest_md5_proof>(out_).verified = true;
    return finish(step::kind::complete);
  }

 private:
  int& stage_;
  proof& out_;
  const std::string& cram_challenge_;
  scram_server* scram_;
  digest_md5_server* digest_;
};

}  // namespace

server_exchange::server_exchange(mechanism m, std::string cram_challenge, scram_setup scram,
                                 digest_md5_setup digest)
    : mechanism_(m), cram_challenge_(std::move(cram_challenge)) {
  // A fixed (empty) challenge would make every CRAM-MD5 response replayable.
  if (mechanism_ == mechanism::cram_md5 && cram_challenge_.empty())
    throw std::invalid_argument("CRAM-MD5 needs a challenge");
  if (mechanism_ == mechanism::scram_sha_256 || mechanism_ == mechanism::scram_sha_256_plus) {
    if (!scram.lookup) throw std::invalid_argument("SCRAM-SHA-256 needs the users' secrets");
    scram.binding.plus = mechanism_ == mechanism::scram_sha_256_plus;
    scram_ = std::make_unique<scram_server>(std::move(scram.lookup), std::move(scram.nonce),
                                            std::move(scram.binding));
  }
  if (mechanism_ == mechanism::digest_md5) {
    if (!digest.lookup) throw std::invalid_argument("DIGEST-MD5 needs the users' secrets");
    digest_ = std::make_unique<digest_md5_server>(std::move(digest.lookup), std::move(digest.realm),
                                                  std::move(digest.nonce));
  }
}

server_exchange::~server_exchange() = default;

step server_exchange::start(std::string_view initial_response, bool has_initial_response) {
  // Out-of-order calls are a caller bug: refuse them but keep what was gathered.
  if (stage_ != stage_idle) return make_step(step::kind::malformed);
  transitions t(stage_, proof_, cram_challenge_, scram_.get(), digest_.get());

  // RFC 4954 section 4: "=" stands for an empty initial response; "*" only
  // cancels an answer to a challenge, so here it is just bad base64.
  std::optional<std::string> decoded;
  if (has_initial_response) {
    if (initial_response == "=")
      decoded.emplace();
    else if (!initial_response.empty())
      decoded = base64_decode(initial_response);
    if (!decoded) return t.finish(step::kind::malformed);
  }

  switch (mechanism_) {
    case mechanism::plain:
      if (decoded) return t.plain_message(*decoded);
      stage_ = stage_plain_response;
      return make_step(step::kind::challenge);
    case mechanism::login:
      if (decoded) return t.login_user(*decoded);
      stage_ = stage_login_user;
      return make_step(step::kind::challenge, std::string(login_user_prompt));
    case mechanism::cram_md5:
      // RFC 2195: the server speaks first, so a client cannot have a response yet.
      if (decoded) return t.finish(step::kind::malformed);
      stage_ = stage_cram_md5_response;
      return make_step(step::kind::challenge, base64_encode(cram_challenge_));
    case mechanism::external:
      if (decoded) return t.external_authzid(*decoded);
      stage_ = stage_external_response;
      return make_step(step::kind::challenge);
    case mechanism::scram_sha_256:
    case mechanism::scram_sha_256_plus:
      if (decoded) return t.scram_first(*decoded);
      stage_ = stage_scram_first;
      return make_step(step::kind::challenge);
    case mechanism::digest_md5:
      // RFC 2831: the server speaks first, as in CRAM-MD5.
      if (decoded) return t.finish(step::kind::malformed);
      stage_ = stage_digest_response;
      return make_step(step::kind::challenge, base64_encode(digest_->challenge()));
  }
  return t.finish(step::kind::malformed);
}

step server_exchange::respond(std::string_view line) {
  if (stage_ == stage_idle || stage_ == stage_done) return make_step(step::kind::malformed);
  transitions t(stage_, proof_, cram_challenge_, scram_.get(), digest_.get());
  if (line == "*") return t.finish(step::kind::cancelled);
  const std::optional<std::string> decoded = base64_decode(line);
  if (!decoded) return t.finish(step::kind::malformed);

  switch (stage_) {
    case stage_plain_response: return t.plain_message(*decoded);
    case stage_login_user: return t.login_user(*decoded);
    case stage_login_password: return t.login_password(*decoded);
    case stage_cram_md5_response: return t.cram_md5_response(*decoded);
    case stage_external_response: return t.external_authzid(*decoded);
    case stage_scram_first: return t.scram_first(*decoded);
    case stage_scram_final: return t.scram_final(*decoded);
    case stage_scram_acknowledged: return t.scram_acknowledged(*decoded);
    case stage_digest_response: return t.digest_response(*decoded);
    case stage_digest_acknowledged: return t.digest_acknowledged(*decoded);
    default: return t.finish(step::kind::malformed);
  }
}

std::string make_cram_md5_challenge(std::string_view hostname) {
  std::uint64_t random = 0;
  if (!RAND_bytes(reinterpret_cast<std::uint8_t*>(&random), sizeof random))
    throw std::runtime_error("RAND_bytes failed");
  std::string challenge = "<";
  challenge += std::to_string(random);
  challenge += '.';
  challenge += std::to_string(static_cast<long long>(std::time(nullptr)));
  challenge += '@';
  challenge += hostname;
  challenge += '>';
  return challenge;
}

}  // namespace smtpguard::sasl
