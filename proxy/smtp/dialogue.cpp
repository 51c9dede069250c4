#include "smtp/dialogue.hpp"

#include "smtp/chars.hpp"
#include "smtp/replies.hpp"

namespace smtpguard::smtp {
namespace {

decision refuse(std::string_view text, bool error = false) { return {effect::reply, text, error}; }
decision proceed(effect what, std::string_view text = {}) { return {what, text, false}; }

bool tls_missing(const dialogue_state& state, const dialogue_policy& policy) {
  return policy.require_tls && !state.tls;
}

// RFC 3207 section 4: a listener that requires TLS refuses AUTH before STARTTLS,
// whatever allow_plaintext_auth says.
bool auth_needs_tls(const dialogue_state& state, const dialogue_policy& policy) {
  return !state.tls && (policy.require_tls || !policy.allow_plaintext_auth);
}

}  // namespace

bool auth_offered(const dialogue_state& state, const dialogue_policy& policy) {
  if (policy.mechanisms.empty() || state.authenticated) return false;
  return !auth_needs_tls(state, policy);
}

bool starttls_offered(const dialogue_state& state, const dialogue_policy& policy) {
  return policy.starttls_listener && !state.tls;
}

dialogue_state after_starttls() {
  dialogue_state fresh;
  fresh.tls = true;
  return fresh;
}

decision decide(const dialogue_state& state, const dialogue_policy& policy, const command& cmd) {
  const bool has_argument = !cmd.argument.empty();
  // RFC 6531: octets above 127 belong only in MAIL and RCPT mailboxes, and
  // only with SMTPUTF8; the session checks those once the path is parsed.
  const bool path_command = cmd.name == verb::mail || cmd.name == verb::rcpt;
  if (!path_command && (has_8bit(cmd.keyword) || has_8bit(cmd.argument))) {
    return refuse(replies::bad_characters, true);
  }
  switch (cmd.name) {
    case verb::ehlo:
    case verb::helo:
      if (!has_argument) return refuse(replies::helo_needs_domain, true);
      return proceed(effect::greet);

    case verb::starttls:
      if (state.tls) return refuse(replies::tls_already_active, true);
      if (!policy.starttls_listener) return refuse(replies::starttls_unavailable, true);
      if (has_argument) return refuse(replies::syntax_error_arguments, true);
      return proceed(effect::start_tls, replies::ready_to_start_tls);

    case verb::auth:
      if (!state.greeted) return refuse(replies::send_helo_first, true);
      // RFC 3207 section 4: refuse before TLS without looking at credentials.
      if (auth_needs_tls(state, policy))
        // Where STARTTLS cannot be had, RFC 4954's 538 says what is missing.
        return refuse(policy.starttls_listener ? replies::must_starttls : replies::auth_needs_encryption, true);
      if (state.authenticated) return refuse(replies::auth_already, true);
      if (state.in_transaction) return refuse(replies::auth_in_transaction, true);
      if (!has_argument) return refuse(replies::syntax_error_arguments, true);
      return proceed(effect::authenticate);

    case verb::mail:
      if (!state.greeted) return refuse(replies::send_helo_first, true);
      if (tls_missing(state, policy)) return refuse(replies::must_starttls, true);
      if (!state.authenticated && !policy.trusted_client && !policy.mx)
        return refuse(replies::auth_required, true);
      if (state.in_transaction) return refuse(replies::nested_mail, true);
      return proceed(effect::mail);

    case verb::rcpt:
      if (!state.in_transaction) return refuse(replies::need_mail, true);
      if (state.recipients >= policy.max_recipients) return refuse(replies::too_many_recipients);
      return proceed(effect::rcpt);

    case verb::data:
      if (!state.in_transaction) return refuse(replies::need_mail, true);
      if (has_argument) return refuse(replies::syntax_error_arguments, true);
      // RFC 2920 section 3.1: pipelined DATA after refused RCPTs.
      if (state.recipients == 0) return refuse(replies::no_valid_recipients);
      return proceed(effect::data);

    case verb::rset:
      if (has_argument) return refuse(replies::syntax_error_arguments, true);
      return proceed(effect::rset);

    case verb::noop:
      return proceed(effect::noop);

    case verb::quit:
      if (has_argument) return refuse(replies::syntax_error_arguments, true);
      return proceed(effect::quit, replies::bye);

    case verb::vrfy:
      if (!has_argument) return refuse(replies::syntax_error_arguments, true);
      return refuse(replies::vrfy_cannot);

    case verb::help:
      return refuse(replies::help);

    case verb::expn:
    case verb::bdat:  // CHUNKING is never advertised
      return refuse(replies::not_implemented, true);

    case verb::unknown:
      break;
  }
  return refuse(replies::unrecognized, true);
}

}  // namespace smtpguard::smtp
