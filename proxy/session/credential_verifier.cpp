#include "session/credential_verifier.hpp"

#include <variant>

namespace smtpguard::session {
namespace {

bool check(const auth::user_db& users, const sasl::proof& proof) {
  if (const auto* password = std::get_if<sasl::password_proof>(&proof)) {
    // We do not act on behalf of other identities (RFC 4616 authzid).
    if (!password->authzid.empty()) {
      users.verify_password(password->user, password->password);
      return false;
    }
    return users.verify_password(password->user, password->password);
  }
  if (const auto* cram = std::get_if<sasl::cram_md5_proof>(&proof))
    return users.verify_cram_md5(cram->user, cram->challenge, cram->digest);
  return false;  // EXTERNAL carries no secret; the session checks the certificate itself
}

}  // namespace

credential_verifier::credential_verifier(int threads, std::chrono::seconds cache_ttl)
    : pool_(static_cast<std::size_t>(threads)), cache_(cache_ttl) {}

credential_verifier::~credential_verifier() {
  pool_.stop();
  pool_.join();
}

net::awaitable<bool> credential_verifier::verify(std::shared_ptr<const auth::user_db> users,
                                                 sasl::proof proof) {
  if (!std::holds_alternative<sasl::password_proof>(proof)) co_return check(*users, proof);  // cheap
  const auto& password = std::get<sasl::password_proof>(proof);
  const bool cacheable = password.authzid.empty();
  const std::uint64_t generation = users->generation();
  const std::string user = password.user;
  const std::string secret = password.password;
  if (cacheable && cache_.verified(generation, user, secret, auth::credential_cache::clock::now())) co_return true;
  // The lambda is built outside the co_await expression: GCC 12 frees
  // captures of a lambda created inside one twice.
  auto check_on_pool = [users = std::move(users), proof = std::move(proof)]() -> net::awaitable<bool> {
    co_return check(*users, proof);
  };
  const bool valid = co_await asio::co_spawn(pool_.get_executor(), std::move(check_on_pool), asio::use_awaitable);
  if (valid && cacheable) cache_.remember(generation, user, secret, auth::credential_cache::clock::now());
  co_return valid;
}

}  // namespace smtpguard::session
