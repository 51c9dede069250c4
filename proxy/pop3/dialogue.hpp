#pragma once
// The POP3 front's authorization state (RFC 1939 section 4) as pure
// decisions: which command is answered here, which goes to the backend and
// how its answer is read. After login the front only relays bytes.
#include <string_view>

#include "pop3/command.hpp"

namespace smtpguard::pop3 {

struct dialogue_policy {
  bool stls_listener = false;  ///< STLS offered (a plaintext listener)
};

struct dialogue_state {
  bool tls = false;
};

enum class effect {
  reply,            ///< answer with `reply` here
  start_tls,        ///< write `reply`, drop pipelined input, handshake
  capa,             ///< to the backend; its multi-line list is filtered
  forward,          ///< to the backend; one status line back (USER)
  login,            ///< to the backend; +OK logs the client in (PASS, APOP)
  auth,             ///< a SASL exchange through the backend; +OK logs in
  list_mechanisms,  ///< bare AUTH: the backend's multi-line mechanism list, filtered
  quit,             ///< to the backend, its answer back, then close
};

struct decision {
  effect what = effect::reply;
  std::string_view reply;        ///< for reply and start_tls
  bool counts_as_error = false;  ///< toward limits.max_errors
};

decision decide(const dialogue_state& state, const dialogue_policy& policy, const command& cmd);

}  // namespace smtpguard::pop3
