#include "pop3/dialogue.hpp"

#include "pop3/capabilities.hpp"
#include "pop3/replies.hpp"

namespace smtpguard::pop3 {
namespace {

decision to_backend(effect what) { return {what, {}, false}; }

}  // namespace

decision decide(const dialogue_state& state, const dialogue_policy& policy, const command& cmd) {
  switch (cmd.name) {
    case verb::capa:
      return to_backend(effect::capa);
    case verb::stls:
      // RFC 2595 section 4: STLS only once, and only where TLS is not already up.
      if (!policy.stls_listener || state.tls) return {effect::reply, replies::tls_active, true};
      return {effect::start_tls, replies::stls_ready, false};
    case verb::quit:
      return to_backend(effect::quit);
    case verb::user:
    case verb::pass:
    case verb::apop:
    case verb::auth:
      // The backend sees plaintext; only the client's side can be protected.
      if (!state.tls) return {effect::reply, replies::login_needs_tls, true};
      if (cmd.name == verb::user) return to_backend(effect::forward);
      if (cmd.name != verb::auth) return to_backend(effect::login);
      if (cmd.argument.empty()) return to_backend(effect::list_mechanisms);
      if (!mechanism_passes(cmd.argument.substr(0, cmd.argument.find(' '))))
        return {effect::reply, replies::mechanism_unavailable, true};
      return to_backend(effect::auth);
    case verb::other:
      break;
  }
  return {effect::reply, replies::unknown_command, true};
}

}  // namespace smtpguard::pop3
