#pragma once
// Password hashes (yescrypt, bcrypt) are slow on purpose; checking them on an
// I/O thread would stall every session sharing it. They run on a small pool
// and the session coroutine resumes on its own executor afterwards.
#include <asio/thread_pool.hpp>
#include <memory>

#include "auth/user_db.hpp"
#include "net/asio_fwd.hpp"
#include "sasl/exchange.hpp"

namespace smtpguard::session {

class credential_verifier {
 public:
  explicit credential_verifier(int threads);
  ~credential_verifier();

  /// True when the proof matches the user's stored secret.
  net::awaitable<bool> verify(std::shared_ptr<const auth::user_db> users, sasl::proof proof);

 private:
  asio::thread_pool pool_;
};

}  // namespace smtpguard::session
