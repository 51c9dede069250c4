#pragma once
// Password hashes (yescrypt, bcrypt) are slow on purpose; checking them on an
// I/O thread would stall every session sharing it. They run on a small pool
// and the session coroutine resumes on its own executor afterwards.
//
// A check is made once for credentials that several sessions of one thread
// present at the same time: the others wait for its answer. Without this, a
// client opening many sessions at once (or the moment its cached check
// expires) would queue one slow hash per session.
#include <asio/thread_pool.hpp>
#include <memory>
#include <optional>
#include <string>

#include "auth/credential_cache.hpp"
#include "auth/user_db.hpp"
#include "net/asio_fwd.hpp"
#include "sasl/exchange.hpp"

namespace smtpguard {
class metrics;
}

namespace smtpguard::session {

class credential_verifier {
 public:
  /// `cache_ttl`: how long a successful PLAIN/LOGIN check is remembered (0: never).
  /// `stats` (may be null) counts how each password check was answered.
  credential_verifier(int threads, std::chrono::seconds cache_ttl, metrics* stats = nullptr);
  ~credential_verifier();

  /// True when the proof matches the user's stored secret.
  net::awaitable<bool> verify(std::shared_ptr<const auth::user_db> users, sasl::proof proof);
  void set_cache_ttl(std::chrono::seconds ttl) { cache_.set_ttl(ttl); }
  /// Lets a check under way finish and drops those not started. Called while
  /// the I/O contexts still exist: a check's answer is posted to one, and a
  /// dropped check takes a session frame with it.
  void shutdown();

 private:
  net::awaitable<bool> hash_on_pool(std::shared_ptr<const auth::user_db> users, sasl::proof proof);
  /// Hashes for every session of this thread presenting the same credentials meanwhile.
  net::awaitable<bool> lead(std::string key, std::shared_ptr<const auth::user_db> users, sasl::proof proof);

  std::optional<asio::thread_pool> pool_;
  auth::credential_cache cache_;
  metrics* stats_;
};

}  // namespace smtpguard::session
