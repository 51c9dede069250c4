#pragma once
// Password hashes (yescrypt, bcrypt) are slow on purpose; checking them on an
// I/O thread would stall every session sharing it. They run on a small pool
// and the session coroutine resumes on its own executor afterwards.
#include <asio/thread_pool.hpp>
#include <memory>

#include "auth/credential_cache.hpp"
#include "auth/user_db.hpp"
#include "net/asio_fwd.hpp"
#include "sasl/exchange.hpp"

namespace smtpguard::session {

class credential_verifier {
 public:
  /// `cache_ttl`: how long a successful PLAIN/LOGIN check is remembered (0: never).
  credential_verifier(int threads, std::chrono::seconds cache_ttl);
  ~credential_verifier();

  /// True when the proof matches the user's stored secret.
  net::awaitable<bool> verify(std::shared_ptr<const auth::user_db> users, sasl::proof proof);
  void set_cache_ttl(std::chrono::seconds ttl) { cache_.set_ttl(ttl); }

 private:
  asio::thread_pool pool_;
  auth::credential_cache cache_;
};

}  // namespace smtpguard::session
