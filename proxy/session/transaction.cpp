#include "session/transaction.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <utility>

#include "log.hpp"
#include "metrics.hpp"
#include "session/backend_monitor.hpp"
#include "session/backend_pool.hpp"
#include "session/message_body.hpp"
#include "session/shared_state.hpp"
#include "smtp/capabilities.hpp"
#include "smtp/data_pace.hpp"
#include "smtp/data_reframer.hpp"
#include "smtp/local_domains.hpp"
#include "smtp/parameters.hpp"
#include "smtp/replies.hpp"

namespace smtpguard::session {
namespace {
namespace replies = smtp::replies;
using steady_clock = std::chrono::steady_clock;
}  // namespace

// --- the backend connection ----------------------------------------------------

/// Connects to the backend if there is no live connection yet: the
/// configured backends in order, the first that connects and greets.
/// Nothing has been sent to one that failed, so moving on is safe.
net::awaitable<bool> transaction::ensure_backend(const smtp::client_identity& client) {
  if (backend_open()) co_return true;
  const config& settings = session_.settings;
  const runtime& rt = session_.rt;
  const auto started = steady_clock::now();
  // The backends the health probe last found up first, in their order; the
  // others after them, since the probe may be out of date.
  std::vector<const backend_server*> order;
  for (const backend_server& server : settings.backend.servers) order.push_back(&server);
  std::stable_partition(order.begin(), order.end(),
                        [&rt](const backend_server* server) { return !rt.backend->down(server->name); });
  for (const backend_server* candidate : order) {
    const backend_server& server = *candidate;
    if (rt.pool != nullptr) {
      const std::string key = reuse_key(server, settings.backend.helo_name);
      backend_ = rt.pool->take(key, settings.backend.reuse_lifetime);
    }
    if (backend_) {
      backend_->take_over(server, client);
      backend_address_ = server.name;
      backend_reused_ = true;
      rt.stats->backend_reused();
      log::event("backend").add("session", session_.id).add("backend", backend_address_).add("reused", true);
      co_return true;
    }
    std::string failed_stage;
    backend_ = co_await backend_connection::open(server, &client, settings.backend.helo_name,
                                                 settings.timeouts, failed_stage, rt.stats);
    if (backend_) {
      backend_address_ = server.name;
      break;
    }
    rt.stats->backend_error(failed_stage);
    log::event("backend_failed")
        .add("session", session_.id)
        .add("backend", server.name)
        .add("stage", failed_stage);
  }
  if (!backend_) co_return false;
  backend_reused_ = false;
  rt.backend->update(backend_->capabilities());
  const auto elapsed = steady_clock::now() - started;
  rt.stats->backend_connected(std::chrono::duration<double>(elapsed).count());
  log::event("backend")
      .add("session", session_.id)
      .add("backend", backend_address_)
      .add("identity", backend_->identity())
      .add("connect_ms",
           static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()))
      .add("reused", false);
  co_return true;
}

net::awaitable<void> transaction::end(bool draining) {
  if (!backend_) co_return;
  const backend_config& reuse = session_.settings.backend;
  backend_pool* pool = session_.rt.pool;
  const bool keep = pool != nullptr && reuse.reuse_idle.count() > 0 && !session_.state.in_transaction &&
                    pipelined_.empty() && !draining && backend_->reusable(reuse.reuse_lifetime);
  if (keep) {
    pool->keep(std::move(backend_), reuse.reuse_idle, reuse.reuse_max_idle);
    co_return;
  }
  co_await backend_->quit();
}

void transaction::drop_backend() noexcept {
  backend_->abort();
  backend_.reset();
}

void transaction::forget_transaction() noexcept {
  session_.state.in_transaction = false;
  session_.state.recipients = 0;
}

/// Sends a command to the backend and relays its reply. Returns the reply
/// code, or 0 when the backend failed (the client then got a 451).
template <typename Stream>
net::awaitable<int> transaction::relay_command(net::line_io<Stream>& io, std::string_view line) {
  auto answer = co_await backend_->command(line);
  if (!answer) {
    backend_lost(io);
    co_return 0;
  }
  relay_reply(io, *answer);
  co_return answer->code;
}

template <typename Stream>
void transaction::relay_reply(net::line_io<Stream>& io, smtp::reply answer) {
  // A backend 421 closes the backend connection, not the client session:
  // tell the client to retry the transaction later instead.
  if (answer.code == 421) {
    answer.code = 451;
    backend_->abort();
    forget_transaction();
  }
  smtp::ensure_enhanced_codes(answer);
  std::string text;
  answer.append_to(text);
  io.queue(text);
}

template <typename Stream>
void transaction::backend_lost(net::line_io<Stream>& io) {
  const backend_failure why = backend_ ? backend_->failure() : backend_failure::gone;
  session_.rt.stats->backend_error("transaction");
  log::event("backend_lost")
      .add("session", session_.id)
      .add("backend", backend_address_)
      .add("reason", to_string(why));
  backend_.reset();
  forget_transaction();
  io.queue(why == backend_failure::protocol ? replies::backend_bad_reply : replies::backend_failed);
}

// --- MAIL and RCPT, pipelined to the backend ---------------------------------------
//
// When the backend has PIPELINING, MAIL and RCPT commands are queued and
// the commands a client pipelined go to the backend in one write (RFC 2920);
// the replies are read, relayed in order and settled when the group ends:
// at the client's last buffered command, or before any command that is not
// a MAIL or RCPT. Until then the session assumes they succeed (a refused
// MAIL makes the backend refuse the RCPTs behind it, which is relayed).

template <typename Stream>
net::awaitable<void> transaction::refuse_in_order(net::line_io<Stream>& io, local_refusal refusal) {
  co_await settle(io);
  io.queue(refusal.reply);
  if (refusal.counts_as_error) ++session_.errors;
}

std::optional<transaction::local_refusal> transaction::check_mail(smtp::path_argument& path, bool smtputf8) {
  smtp::strip_auth_parameter(path);
  if (path.has_8bit && !smtputf8) return local_refusal{replies::utf8_needs_smtputf8};
  for (const auto& p : path.parameters) {
    if (p.keyword != "SIZE") continue;
    char* end = nullptr;
    const unsigned long long declared = std::strtoull(p.value.c_str(), &end, 10);
    if (p.value.empty() || *end != '\0') return local_refusal{replies::syntax_error_arguments, true};
    if (declared > session_.settings.limits.max_message_size) return local_refusal{replies::message_too_big};
  }
  // Senders belong to users: a trusted host that did not authenticate has
  // no user whose list could apply.
  const std::string& user = session_.state.user;
  if (session_.state.authenticated && !path.mailbox.empty() &&
      !session_.rt.users->sender_allowed(user, path.mailbox)) {
    log::event("sender_refused").add("session", session_.id).add("user", user).add("sender", path.mailbox);
    return local_refusal{replies::sender_not_owned};
  }
  return std::nullopt;
}

namespace {
constexpr send_budget budgets_in_order[] = {send_budget::messages, send_budget::recipients};
}  // namespace

net::awaitable<std::string_view> transaction::budget_refusal() {
  if (session_.trusted_network) co_return std::string_view();
  const std::string user = session_.state.authenticated ? session_.state.user : std::string();
  shared_state shared(session_.rt);
  for (const send_budget which : budgets_in_order) {
    const auto scope = co_await shared.spent(which, session_.client_key, user);
    if (scope == auth::lockout_scope::none) continue;
    const bool messages = which == send_budget::messages;
    log::event("message_rate_limited")
        .add("session", session_.id)
        .add("client", session_.client_ip)
        .add("user", user)
        .add("scope", scope == auth::lockout_scope::ip ? "ip" : "user")
        .add("budget", messages ? "messages" : "recipients");
    co_return messages ? replies::message_rate_limited : replies::recipient_rate_limited;
  }
  co_return std::string_view();
}

net::awaitable<void> transaction::count_sent(int recipients) {
  if (session_.trusted_network) co_return;
  const std::string user = session_.state.authenticated ? session_.state.user : std::string();
  shared_state shared(session_.rt);
  co_await shared.count(send_budget::messages, session_.client_key, user, 1);
  co_await shared.count(send_budget::recipients, session_.client_key, user, recipients);
}

template <typename Stream>
net::awaitable<void> transaction::mail(net::line_io<Stream>& io, const smtp::command& cmd,
                                       const smtp::client_identity& client) {
  auto path = smtp::parse_mail_from(cmd.argument);
  if (!path) {
    const local_refusal refusal{replies::mail_syntax, true};
    co_await refuse_in_order(io, refusal);
    co_return;
  }
  const bool smtputf8 = smtp::has_parameter(*path, "SMTPUTF8");
  if (const auto refusal = check_mail(*path, smtputf8)) {
    co_await refuse_in_order(io, *refusal);
    co_return;
  }
  const std::string_view over_budget = co_await budget_refusal();
  if (!over_budget.empty()) {
    const local_refusal refusal{over_budget};
    co_await refuse_in_order(io, refusal);
    co_return;
  }
  // A kept connection that the backend gave up on just as it was taken
  // (closed it, or is closing it with 421) shows it only at its first
  // command: MAIL then goes again on another connection. No transaction
  // was open on the first one, so nothing is sent twice.
  for (;;) {
    const bool connected = co_await ensure_backend(client);
    if (!connected) {
      const local_refusal refusal{replies::backend_unavailable};
      co_await refuse_in_order(io, refusal);
      co_return;
    }
    if (!smtp::parameters_supported(*path, backend_->capabilities(), true)) {
      const local_refusal refusal{replies::parameter_unsupported};
      co_await refuse_in_order(io, refusal);
      co_return;
    }
    smtp::path_argument sent = *path;
    // RFC 4954 section 5: to a backend that trusts us, who submitted it.
    if (backend_->takes_mail_auth())
      sent.parameters.push_back({"AUTH", smtp::xtext(session_.state.user), true});
    const std::string line = smtp::format_mail_from(sent);
    if (std::exchange(backend_reused_, false)) {
      auto answer = co_await backend_->command(line);
      const bool gave_up = answer ? answer->code == 421 : backend_->failure() == backend_failure::gone;
      if (gave_up) {
        log::event("backend_stale").add("session", session_.id).add("backend", backend_address_);
        backend_.reset();
        continue;
      }
      if (!answer) {
        backend_lost(io);
        co_return;
      }
      relay_reply(io, *answer);
      if (answer->code / 100 == 2) mail_accepted(path->mailbox, smtputf8);
      co_return;
    }
    if (backend_->capabilities().pipelining) {
      const pipelined_command queued{true, path->mailbox};
      co_await pipeline(io, line, queued, smtputf8);
      co_return;
    }
    const int code = co_await relay_command(io, line);
    if (code / 100 == 2) mail_accepted(path->mailbox, smtputf8);
    co_return;
  }
}

template <typename Stream>
net::awaitable<void> transaction::rcpt(net::line_io<Stream>& io, const smtp::command& cmd) {
  auto path = smtp::parse_rcpt_to(cmd.argument);
  if (!path) {
    const local_refusal refusal{replies::rcpt_syntax, true};
    co_await refuse_in_order(io, refusal);
    co_return;
  }
  if (path->has_8bit && !session_.state.smtputf8) {
    const local_refusal refusal{replies::utf8_needs_smtputf8};
    co_await refuse_in_order(io, refusal);
    co_return;
  }
  // Only an MX listener lets an unauthorized client this far: it may send
  // to the domains this server receives mail for, nowhere else.
  const bool authorized = session_.state.authenticated || session_.policy.trusted_client;
  if (!authorized && session_.dnsbl != nullptr) {
    const dnsbl_check::verdict blocklists = co_await session_.dnsbl->result();
    if (blocklists.unanswered > 0)
      log::event("dnsbl_unanswered")
          .add("session", session_.id)
          .add("client", session_.client_ip)
          .add("zones", blocklists.unanswered);
    if (!blocklists.zone.empty()) {
      log::event("dnsbl_listed")
          .add("session", session_.id)
          .add("client", session_.client_ip)
          .add("zone", blocklists.zone)
          .add("recipient", path->mailbox);
      session_.rt.stats->rejection("dnsbl");
      // Postfix's wording, which senders' postmasters know to look up.
      const std::string text = "554 5.7.1 Service unavailable; client [" + session_.client_ip +
                               "] blocked using " + blocklists.zone + "\r\n";
      const local_refusal refusal{text};
      co_await refuse_in_order(io, refusal);
      co_return;
    }
  }
  if (!authorized && !smtp::local_recipient(path->mailbox, session_.settings.relay.local_domains)) {
    log::event("relay_denied").add("session", session_.id).add("client", session_.client_ip).add("recipient",
                                                                                               path->mailbox);
    const local_refusal refusal{replies::relay_access_denied};
    co_await refuse_in_order(io, refusal);
    co_return;
  }
  if (!backend_open()) {
    co_await settle(io);
    backend_lost(io);
    co_return;
  }
  if (!smtp::parameters_supported(*path, backend_->capabilities(), false)) {
    const local_refusal refusal{replies::parameter_unsupported};
    co_await refuse_in_order(io, refusal);
    co_return;
  }
  const std::string line = smtp::format_rcpt_to(*path);
  if (backend_->capabilities().pipelining) {
    const pipelined_command sent{false, path->mailbox};
    co_await pipeline(io, line, sent, false);
    co_return;
  }
  const int code = co_await relay_command(io, line);
  if (code / 100 == 2) {
    ++session_.state.recipients;
    last_recipient_ = path->mailbox;
  }
}

/// Queues a MAIL or RCPT of a pipelined group and assumes it succeeds
/// (a RCPT is counted at once, so the recipient limit holds within the
/// group); the group is settled when the client has no whole command left.
template <typename Stream>
net::awaitable<void> transaction::pipeline(net::line_io<Stream>& io, std::string_view line,
                                           const pipelined_command& sent, bool smtputf8) {
  if (!backend_->queue_command(line)) {
    co_await settle(io);
    backend_lost(io);
    co_return;
  }
  if (sent.mail)
    mail_accepted(sent.mailbox, smtputf8);
  else
    ++session_.state.recipients;
  pipelined_.push_back(sent);
  if (!io.framer().has_line()) co_await settle(io);
}

void transaction::mail_accepted(const std::string& sender, bool smtputf8) {
  session_.state.in_transaction = true;
  session_.state.smtputf8 = smtputf8;
  session_.state.recipients = 0;
  sender_ = sender;
  last_recipient_.clear();
}

/// Reads, relays and settles the replies of the queued MAIL and RCPT
/// commands, so the session's state is the backend's again.
template <typename Stream>
net::awaitable<void> transaction::settle(net::line_io<Stream>& io) {
  smtp::dialogue_state& state = session_.state;
  const std::string_view label = session_.reply_label;
  bool mail_refused = false;
  // Taken whole: an idle session keeps no buffer for its next group.
  const std::vector<pipelined_command> group = std::exchange(pipelined_, {});
  for (const pipelined_command& sent : group) {
    session_.reply_label = sent.mail ? "mail" : "rcpt";
    std::optional<smtp::reply> answer;
    if (backend_open()) answer = co_await backend_->read_reply(session_.settings.timeouts.backend_reply);
    if (!answer) {
      // Every pipelined command gets its one reply, even with the backend gone.
      if (backend_)
        backend_lost(io);
      else
        io.queue(replies::backend_failed);
      continue;
    }
    const bool accepted = answer->code / 100 == 2;
    relay_reply(io, *answer);
    if (sent.mail && !accepted) {
      mail_refused = true;
      forget_transaction();
    } else if (!sent.mail && accepted && state.in_transaction) {
      last_recipient_ = sent.mailbox;
    } else if (!sent.mail && !accepted && !mail_refused && state.recipients > 0) {
      --state.recipients;
    }
  }
  session_.reply_label = label;
}

template <typename Stream>
net::awaitable<void> transaction::reset(net::line_io<Stream>& io, bool reply) {
  const bool relay = backend_open() && session_.state.in_transaction;
  forget_transaction();
  if (!relay) {
    if (reply) io.queue(replies::ok);
    co_return;
  }
  auto answer = co_await backend_->command("RSET");
  if (!answer || answer->code != 250) backend_.reset();  // a fresh connection is as good as a reset
  if (reply) io.queue(replies::ok);
}

template <typename Stream>
net::awaitable<void> transaction::noop(net::line_io<Stream>& io) {
  if (backend_open())
    co_await relay_command(io, "NOOP");
  else
    io.queue(replies::ok);
}

// --- DATA ------------------------------------------------------------------------

template <typename Stream>
net::awaitable<data_outcome> transaction::data(net::line_io<Stream>& io, smtp::received_info received) {
  if (!backend_open()) {
    backend_lost(io);
    co_return data_outcome{};
  }
  auto go_ahead = co_await backend_->command("DATA");
  if (!go_ahead) {
    backend_lost(io);
    co_return data_outcome{};
  }
  if (go_ahead->code != 354) {
    relay_reply(io, *go_ahead);
    co_await reset(io, false);
    co_return data_outcome{};
  }
  io.queue(replies::start_mail_input);
  if (session_.state.recipients == 1) received.recipient = last_recipient_;
  received.when = std::time(nullptr);
  std::string header = smtp::build_received_header(received);
  const data_outcome done = co_await transfer_message(io, std::move(header));
  co_return done;
}

/// The message itself: client bytes through the re-framer to the backend,
/// and 250 to the client only once the backend said 250.
template <typename Stream>
net::awaitable<data_outcome> transaction::transfer_message(net::line_io<Stream>& io, std::string header) {
  const config& settings = session_.settings;
  const auto transfer_started = steady_clock::now();
  const int recipients = session_.state.recipients;
  forget_transaction();
  const bool flushed = co_await io.flush(settings.timeouts.command);
  if (!flushed) {
    drop_backend();
    co_return data_outcome{true, {}};
  }
  smtp::reframer_options framing{settings.smtp.bare_line_endings, settings.limits.max_message_size};
  const auto text_line = settings.limits.max_text_line;
  framing.max_line_length = text_line == 0 ? 0 : text_line - 2;  // the option counts content, not CRLF
  smtp::data_reframer reframer(framing);
  const smtp::data_pace pace(settings.timeouts.data_min_rate, settings.timeouts.data_rate_window,
                             settings.timeouts.data_block);
  const body_transfer body = co_await transfer_body(io, *backend_, reframer, std::move(header), pace);
  if (body.end != body_end::complete) {
    // The client vanished mid-message: the backend must never see the final dot.
    drop_backend();
    log::event("message")
        .add("session", session_.id)
        .add("result", "aborted")
        .add("reason", to_string(body.end))
        .add("size", reframer.size());
    session_.rt.stats->message("aborted", reframer.size(), recipients);
    if (body.end == body_end::too_slow) co_return data_outcome{true, replies::data_too_slow};
    if (body.end == body_end::timeout) co_return data_outcome{true, replies::timeout};
    co_return data_outcome{true, {}};
  }

  const auto size = reframer.size();
  std::string_view result = "failed";
  std::string_view reason = "backend";
  std::string backend_text;
  std::string queue_id;
  if (reframer.error() != smtp::reframe_error::none) {
    // The backend holds a partial message; dropping the connection is the
    // only way to make sure it is never delivered.
    drop_backend();
    result = "rejected";
    const bool too_big = reframer.error() == smtp::reframe_error::too_big;
    reason = too_big ? "too_big" : "bare_line_ending";
    io.queue(too_big ? replies::message_too_big : replies::bare_line_ending);
  } else if (!body.backend_ok) {
    backend_lost(io);
  } else {
    std::optional<smtp::reply> answer = co_await backend_->read_reply(settings.timeouts.data_end);
    if (!answer) {
      backend_lost(io);
    } else {
      const int reply_class = answer->reply_class();
      result = reply_class == 2 ? "accepted" : reply_class == 5 ? "rejected" : "deferred";
      reason = reply_class == 2 ? "" : "backend";
      if (!answer->lines.empty()) backend_text = answer->lines.front();
      queue_id = smtp::queue_id(*answer);
      relay_reply(io, *answer);
      ++messages_;
      if (reply_class == 2) {
        // Counting may cost a round trip to Redis: the client's reply goes first.
        const bool budgets = session_.rt.message_counts != nullptr || session_.rt.recipient_counts != nullptr;
        if (session_.rt.redis != nullptr && budgets) {
          const bool replied = co_await io.flush(settings.timeouts.command);
          (void)replied;  // a client gone is found at its next read
        }
        co_await count_sent(recipients);
      }
    }
  }
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - transfer_started);
  log::event("message")
      .add("session", session_.id)
      .add("client", session_.client_ip)
      .add("user", session_.state.user)
      .add("sender", sender_)
      .add("recipients", recipients)
      .add("size", size)
      .add("result", result)
      .add("reason", reason)
      .add("queue_id", queue_id)
      .add("backend_reply", backend_text)
      .add("duration_ms", static_cast<std::int64_t>(elapsed.count()));
  session_.rt.stats->message(result, size, recipients);
  co_return data_outcome{};
}

// The two streams a session runs on: the plain socket and TLS.
template net::awaitable<void> transaction::mail(net::line_io<net::tcp::socket>&, const smtp::command&,
                                                const smtp::client_identity&);
template net::awaitable<void> transaction::mail(net::line_io<net::tls_stream>&, const smtp::command&,
                                                const smtp::client_identity&);
template net::awaitable<void> transaction::rcpt(net::line_io<net::tcp::socket>&, const smtp::command&);
template net::awaitable<void> transaction::rcpt(net::line_io<net::tls_stream>&, const smtp::command&);
template net::awaitable<data_outcome> transaction::data(net::line_io<net::tcp::socket>&, smtp::received_info);
template net::awaitable<data_outcome> transaction::data(net::line_io<net::tls_stream>&, smtp::received_info);
template net::awaitable<void> transaction::reset(net::line_io<net::tcp::socket>&, bool);
template net::awaitable<void> transaction::reset(net::line_io<net::tls_stream>&, bool);
template net::awaitable<void> transaction::noop(net::line_io<net::tcp::socket>&);
template net::awaitable<void> transaction::noop(net::line_io<net::tls_stream>&);
template net::awaitable<void> transaction::settle(net::line_io<net::tcp::socket>&);
template net::awaitable<void> transaction::settle(net::line_io<net::tls_stream>&);

}  // namespace smtpguard::session
