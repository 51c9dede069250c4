#pragma once
// Client and server SSL objects joined by a BIO pair, so that unit tests run
// real handshakes in memory, without sockets.
#include <utility>

#include "tls/boringssl.hpp"

namespace smtpguard::tls::in_memory {

/// Joins the two connections and sets their roles.
inline void connect_in_memory(SSL* client, SSL* server) {
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
  SSL_set_bio(client, client_bio, client_bio);
  SSL_set_bio(server, server_bio, server_bio);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);
}

/// Alternates the two sides until both finish or one fails; true when both
/// completed. The error queue is left as the failing side left it.
inline bool drive_handshake(SSL* client, SSL* server) {
  bool client_done = false, server_done = false, failed = false;
  for (int round = 0; round < 20 && !failed && !(client_done && server_done); ++round) {
    for (auto [ssl, done] : {std::pair{client, &client_done}, std::pair{server, &server_done}}) {
      if (*done || failed) continue;
      const int rc = SSL_do_handshake(ssl);
      if (rc == 1) {
        *done = true;
      } else if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ) {
        failed = true;
      }
    }
  }
  return !failed && client_done && server_done;
}

}  // namespace smtpguard::tls::in_memory
