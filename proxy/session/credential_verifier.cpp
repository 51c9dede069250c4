#include "session/credential_verifier.hpp"

#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "metrics.hpp"

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
  // The exchange checked the proof against the stored key itself.
  if (const auto* scram = std::get_if<sasl::scram_proof>(&proof))
    return scram->verified && scram->authzid.empty();
  if (const auto* digest = std::get_if<sasl::digest_md5_proof>(&proof))
    return digest->verified && digest->authzid.empty();
  return false;  // EXTERNAL carries no secret; the session checks the certificate itself
}

/// A check under way, and the sessions of the same thread waiting for its
/// answer. Each waiter's timer lives in its own coroutine frame and never
/// expires: cancelling it is the wake-up.
struct flight {
  bool done = false;
  bool valid = false;
  std::vector<asio::steady_timer*> waiters;
};

// Per I/O thread, so no lock: sessions only ever join checks of their own
// thread, and a check's answer comes back on the thread that asked.
std::unordered_map<std::string, std::shared_ptr<flight>>& flights() {
  thread_local std::unordered_map<std::string, std::shared_ptr<flight>> in_progress;
  return in_progress;
}

/// Takes a waiter off its flight if its frame goes before the answer does.
struct waiting {
  std::shared_ptr<flight> on;
  asio::steady_timer* timer;
  ~waiting() {
    if (on->done) return;
    std::erase(on->waiters, timer);
  }
};

/// Ends a flight however its check ends: later sessions with the same
/// credentials start a check of their own (or find the cache), and those
/// waiting get the answer. A frame destroyed while suspended (the thread's
/// io_context going away) wakes no one: its waiters go with it.
struct leading {
  std::string key;
  std::shared_ptr<flight> of;
  bool answered = false;  ///< the check returned or threw
  bool valid = false;
  ~leading() {
    auto& all = flights();
    if (const auto it = all.find(key); it != all.end() && it->second == of) all.erase(it);
    of->valid = valid;
    of->done = true;
    if (answered)
      for (auto* timer : of->waiters) timer->cancel();
  }
};

net::awaitable<bool> answer(bool valid) { co_return valid; }

net::awaitable<bool> join(std::shared_ptr<flight> on) {
  const auto executor = co_await asio::this_coro::executor;
  asio::steady_timer wake(executor, asio::steady_timer::time_point::max());
  const waiting waiter{std::move(on), &wake};
  waiter.on->waiters.push_back(&wake);
  co_await wake.async_wait(net::as_result);
  // Not done: this session's wait was cancelled from outside, so no answer.
  const bool valid = waiter.on->done && waiter.on->valid;
  co_return valid;
}

}  // namespace

credential_verifier::credential_verifier(int threads, std::chrono::seconds cache_ttl, metrics* stats)
    : pool_(std::in_place, static_cast<std::size_t>(threads)), cache_(cache_ttl), stats_(stats) {}

credential_verifier::~credential_verifier() { shutdown(); }

void credential_verifier::shutdown() {
  if (!pool_) return;
  pool_->stop();
  pool_->join();
  pool_.reset();
}

net::awaitable<bool> credential_verifier::hash_on_pool(std::shared_ptr<const auth::user_db> users,
                                                       sasl::proof proof) {
  if (stats_) stats_->password_check("hash");
  // The lambda is built outside the co_await expression: GCC 12 frees
  // captures of a lambda created inside one twice.
  auto check_on_pool = [users = std::move(users), proof = std::move(proof)]() -> net::awaitable<bool> {
    co_return check(*users, proof);
  };
  const bool valid =
      co_await asio::co_spawn(pool_->get_executor(), std::move(check_on_pool), asio::use_awaitable);
  co_return valid;
}

// verify() itself is not a coroutine: a coroutine's frame is sized for all
// of its paths, and Asio recycles frames per thread, so a large one freed
// here would be reused for some idle session's long-lived frame. Each path
// gets a coroutine no larger than it needs.
net::awaitable<bool> credential_verifier::verify(std::shared_ptr<const auth::user_db> users,
                                                 sasl::proof proof) {
  const auto* password = std::get_if<sasl::password_proof>(&proof);
  if (!password) return answer(check(*users, proof));  // cheap
  if (!password->authzid.empty()) return hash_on_pool(std::move(users), std::move(proof));
  std::string key = cache_.key(users->generation(), password->user, password->password);
  if (key.empty()) return hash_on_pool(std::move(users), std::move(proof));
  if (cache_.verified(key, auth::credential_cache::clock::now())) {
    if (stats_) stats_->password_check("cache");
    return answer(true);
  }
  if (const auto it = flights().find(key); it != flights().end()) {
    if (stats_) stats_->password_check("shared");
    return join(it->second);
  }
  return lead(std::move(key), std::move(users), std::move(proof));
}

net::awaitable<bool> credential_verifier::lead(std::string key, std::shared_ptr<const auth::user_db> users,
                                               sasl::proof proof) {
  // Registered as soon as this runs, which is at once: the caller awaits
  // verify()'s result in the same statement.
  leading leader{key, std::make_shared<flight>()};
  flights().emplace(key, leader.of);
  try {
    leader.valid = co_await hash_on_pool(std::move(users), std::move(proof));
  } catch (...) {
    leader.answered = true;
    throw;
  }
  leader.answered = true;
  // Remembered before the flight ends, so a session arriving in between
  // finds one or the other and never starts a second hash.
  if (leader.valid) cache_.remember(std::move(key), auth::credential_cache::clock::now());
  co_return leader.valid;
}

}  // namespace smtpguard::session
