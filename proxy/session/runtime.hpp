#pragma once
// What every session shares: the configuration and the objects built from it
// (immutable, swapped whole on reload) and the long-lived services.
#include <asio/ssl/context.hpp>
#include <memory>

#include "auth/lockout.hpp"
#include "auth/relay_grants.hpp"
#include "auth/user_db.hpp"
#include "config.hpp"
#include "metrics.hpp"
#include "net/dns_resolver.hpp"
#include "net/redis_client.hpp"
#include "session/backend_monitor.hpp"
#include "session/backend_pool.hpp"
#include "session/credential_verifier.hpp"
#include "session/handshake_slots.hpp"
#include "session/session_registry.hpp"

namespace smtpguard::session {

struct runtime {
  std::shared_ptr<const config> settings;
  std::shared_ptr<asio::ssl::context> tls;  ///< null when no listener uses TLS
  std::shared_ptr<const auth::user_db> users;
  metrics* stats = nullptr;
  credential_verifier* verifier = nullptr;
  backend_monitor* backend = nullptr;
  session_registry* sessions = nullptr;
  backend_pool* pool = nullptr;  ///< the session's thread's kept backend connections; null: none kept
  handshake_slots* handshakes = nullptr;  ///< the session's thread's TLS handshake slots; null: no cap
  net::dns_resolver* dns = nullptr;       ///< the session's thread's DNS lookups; null: no mx listener
  auth::relay_grants* pop_grants = nullptr;  ///< POP-before-SMTP's addresses; null: no POP3 front
  net::redis_client* redis = nullptr;        ///< the session's thread's Redis; null: nothing shared
  /// Messages accepted per user and per address (limits.max_messages_*), process-wide; null: no limits.
  auth::lockout_table* message_counts = nullptr;
  /// Their recipients (limits.max_recipients_*), likewise.
  auth::lockout_table* recipient_counts = nullptr;
};

}  // namespace smtpguard::session
