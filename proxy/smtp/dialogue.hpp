#pragma once
// Client-side protocol policy as pure transitions: given what the session
// knows and a parsed command, decide what happens. No I/O; the session
// coroutine carries the decision out.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/command.hpp"

namespace smtpguard::smtp {

/// Listener policy for this session, fixed while it runs.
struct dialogue_policy {
  bool starttls_listener = false;       ///< STARTTLS may be offered
  bool require_tls = false;             ///< no AUTH / MAIL before TLS
  bool allow_plaintext_auth = false;    ///< AUTH offered and accepted without TLS
  std::vector<std::string> mechanisms;  ///< enabled SASL mechanisms, upper-case
  /// MAIL without AUTH: the client's address is in relay.trusted_networks,
  /// or logged in to the POP3 front lately (POP-before-SMTP).
  bool trusted_client = false;
  /// A listener of role mx: MAIL without AUTH, RCPT to local domains only
  /// (the session checks those) unless the client is authorized.
  bool mx = false;
  int max_recipients = 100;
};

/// What the session has established so far. STARTTLS resets it except `tls`.
struct dialogue_state {
  bool tls = false;
  bool greeted = false;   ///< EHLO or HELO accepted
  bool extended = false;  ///< EHLO rather than HELO
  std::string helo;
  bool authenticated = false;
  std::string user;
  bool in_transaction = false;  ///< MAIL accepted by the backend
  bool smtputf8 = false;        ///< that MAIL carried SMTPUTF8 (RFC 6531)
  int recipients = 0;           ///< RCPTs accepted by the backend
};

enum class effect {
  reply,         ///< send `reply`, nothing else
  greet,         ///< EHLO/HELO: reset the transaction, record the name, send our EHLO reply
  start_tls,     ///< send `reply` (220), drop buffered input, handshake, forget state
  authenticate,  ///< run the SASL exchange for the mechanism in the argument
  mail,          ///< check the sender, then relay MAIL
  rcpt,          ///< relay RCPT
  data,          ///< relay DATA and the message
  rset,          ///< abort the transaction (relay RSET when a backend is connected)
  noop,          ///< relay NOOP when a backend is connected, else reply 250
  quit,          ///< send `reply` (221) and close
};

struct decision {
  effect what = effect::reply;
  std::string_view reply;        ///< wire form for reply / start_tls / quit, and refusals
  bool counts_as_error = false;  ///< toward the bad-command budget
};

/// True when AUTH may be advertised and used in this state.
bool auth_offered(const dialogue_state& state, const dialogue_policy& policy);
/// True when STARTTLS may be advertised and used in this state.
bool starttls_offered(const dialogue_state& state, const dialogue_policy& policy);

/// The check-then-proceed command table.
decision decide(const dialogue_state& state, const dialogue_policy& policy, const command& cmd);

/// The state after STARTTLS: only `tls` survives (RFC 3207 section 4.2).
dialogue_state after_starttls();

}  // namespace smtpguard::smtp
