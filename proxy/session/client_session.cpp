#include "session/client_session.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "auth/lockout.hpp"
#include "log.hpp"
#include "net/connection_limits.hpp"
#include "net/line_io.hpp"
#include "net/timeout.hpp"
#include "sasl/exchange.hpp"
#include "session/backend_connection.hpp"
#include "smtp/capabilities.hpp"
#include "smtp/command.hpp"
#include "smtp/data_reframer.hpp"
#include "smtp/dialogue.hpp"
#include "smtp/identity.hpp"
#include "smtp/parameters.hpp"
#include "smtp/received.hpp"
#include "smtp/replies.hpp"
#include "tls/client_verify.hpp"
#include "tls/server_context.hpp"

namespace smtpguard::session {
namespace {

namespace replies = smtp::replies;
using tls_stream = net::tls_stream;
using steady_clock = std::chrono::steady_clock;

// RFC 4954 section 4: an AUTH line may carry a 12288-octet initial response.
constexpr std::size_t max_auth_line = 12288 + 2;

enum class outcome { next, quit, closed, start_tls };

std::string new_session_id() {
  std::uint8_t bytes[6];
  RAND_bytes(bytes, sizeof bytes);
  char text[13];
  for (std::size_t i = 0; i < sizeof bytes; ++i) std::snprintf(text + 2 * i, 3, "%02x", bytes[i]);
  return text;
}

std::string_view scope_name(auth::lockout_scope scope) {
  return scope == auth::lockout_scope::ip ? "ip" : "user";
}

// The command a reply answers, for the replies metric.
std::string_view command_label(smtp::verb name) {
  switch (name) {
    case smtp::verb::ehlo:
      return "ehlo";
    case smtp::verb::helo:
      return "helo";
    case smtp::verb::starttls:
      return "starttls";
    case smtp::verb::auth:
      return "auth";
    case smtp::verb::mail:
      return "mail";
    case smtp::verb::rcpt:
      return "rcpt";
    case smtp::verb::data:
      return "data";
    case smtp::verb::rset:
      return "rset";
    case smtp::verb::noop:
      return "noop";
    case smtp::verb::quit:
      return "quit";
    default:
      return "other";
  }
}

// tls::verification_failure's reasons as bounded metric labels.
std::string_view certificate_result(std::string_view reason) {
  if (reason == "expired") return "expired";
  if (reason == "not yet valid") return "not_yet_valid";
  if (reason == "unknown CA") return "unknown_ca";
  if (reason == "revoked") return "revoked";
  if (reason == "none presented") return "missing";
  if (reason == "bad signature") return "bad_signature";
  if (reason == "chain too long") return "chain_too_long";
  if (reason == "unusable") return "unusable";
  return "invalid";
}

class client_session final : public net::reply_observer {
 public:
  client_session(const listener_config& listener, runtime rt, const net::tcp::endpoint& peer,
                 const net::tcp::endpoint& local, std::string client_key, auth::lockout_table& lockouts)
      : listener_(listener),
        rt_(std::move(rt)),
        settings_(*rt_.settings),
        id_(new_session_id()),
        peer_ip_(peer.address().to_string()),
        peer_port_(peer.port()),
        local_(local),
        client_key_(std::move(client_key)),
        lockouts_(lockouts) {
    policy_.starttls_listener = listener.tls == tls_mode::starttls;
    policy_.require_tls = listener.tls != tls_mode::none && listener.require_tls;
    policy_.allow_plaintext_auth = listener.allow_plaintext_auth;
    policy_.mechanisms = settings_.auth.mechanisms;
    policy_.max_recipients = settings_.limits.max_recipients;
    client_certificates_ = listener.client_certificates.value_or(settings_.tls.client_certificates.mode);
  }

  ~client_session() {
    if (registration_ != 0) rt_.sessions->remove(registration_);
  }
  client_session(const client_session&) = delete;
  client_session& operator=(const client_session&) = delete;

  // The socket is taken by reference down the chain of frames an idle
  // session holds: a socket passed by value leaves a dead copy in each.
  net::awaitable<void> run(net::tcp::socket& socket) {
    if (rt_.sessions != nullptr)
      registration_ = rt_.sessions->add(socket.get_executor(), [this] { begin_drain(); });
    socket_ = &socket;
    log::event("connect")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("port", static_cast<int>(peer_port_))
        .add("listener", listener_.name);
    const auto started = steady_clock::now();
    bool secure = listener_.tls == tls_mode::implicit;
    if (!secure) {
      ended_ = co_await serve(socket);
      secure = ended_ == outcome::start_tls;
      // RFC 3207 section 4.2: forget everything learned before TLS.
      if (secure) state_ = smtp::after_starttls();
    }
    if (secure) co_await serve_tls(socket);
    socket_ = nullptr;
    if (backend_) co_await release_backend();
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - started);
    // The session's summary: everything an operator greps for in one line.
    log::event("disconnect")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("port", static_cast<int>(peer_port_))
        .add("listener", listener_.name)
        .add("tls_version", tls_.version)
        .add("tls_cipher", tls_.cipher)
        .add("client_certificate", peer_.presented ? peer_.subject : std::string())
        .add("user", state_.user)
        .add("mechanism", mechanism_)
        .add("messages", messages_)
        .add("result", ended_ == outcome::quit ? "quit" : "closed")
        .add("duration_ms", static_cast<std::int64_t>(elapsed.count()));
  }

 private:
  // --- draining (SIGTERM) ------------------------------------------------------

  /// Runs on this session's thread. A session waiting for a command outside
  /// a transaction is woken to say 421; one in a transaction finishes it.
  void begin_drain() {
    draining_ = true;
    if (idle_ && socket_ != nullptr) {
      asio::error_code ignored;
      socket_->cancel(ignored);
    }
  }
  bool drain_due() const noexcept { return draining_ && !state_.in_transaction; }

  // --- TLS -----------------------------------------------------------------

  net::awaitable<bool> handshake(tls_stream& stream, net::duration limit) {
    tls::request_client_certificate(stream.native_handle(), client_certificates_);
    auto done = co_await net::with_timeout(stream.handshake(), limit);
    if (!done || *done) {
      // A refused client certificate is the likeliest cause worth naming.
      std::string reason = tls::verification_failure(stream.native_handle());
      const bool certificate = !reason.empty();
      if (!certificate) reason = done ? done->message() : "timeout";
      rt_.stats->tls_handshake(listener_.name, "", "",
                               certificate ? "client_certificate" : done ? "error" : "timeout");
      if (certificate) rt_.stats->client_certificate(certificate_result(reason));
      log::event("tls_failed").add("session", id_).add("client", peer_ip_).add("reason", reason);
      co_return false;
    }
    tls_ = tls::describe(stream.native_handle());
    state_.tls = true;
    rt_.stats->tls_handshake(listener_.name, tls_.version, tls_.cipher, "success");
    peer_ = tls::inspect_peer(stream.native_handle());
    if (client_certificates_ != client_cert_mode::none)
      rt_.stats->client_certificate(!peer_.presented ? "missing" : peer_.verified ? "verified" : "unverified");
    if (peer_.presented && peer_.verified) {
      if (const auto* owner = rt_.users->find_by_certificate(peer_.sha256, peer_.emails, peer_.common_name)) {
        certificate_user_ = owner->name;
        // Postfix's permit_tls_clientcerts: the certificate is the credential.
        if (owner->relay_by_certificate) {
          state_.authenticated = true;
          state_.user = owner->name;
          mechanism_ = "certificate";
        }
      }
    }
    log::event("tls")
        .add("session", id_)
        .add("version", tls_.version)
        .add("cipher", tls_.cipher)
        .add("client_certificate", peer_.presented ? peer_.subject : std::string())
        .add("certificate_user", certificate_user_)
        .add("relay_by_certificate", state_.authenticated);
    co_return true;
  }

  /// One of the thread's handshake slots (see handshake_slots.hpp), or an
  /// empty one when `deadline` passed first. When they are all taken, a
  /// client that has not sent its hello yet does not queue for one.
  net::awaitable<handshake_slots::slot> handshake_slot(net::tcp::socket& socket, steady_clock::time_point deadline) {
    if (rt_.handshakes == nullptr) co_return handshake_slots::slot();
    const std::size_t limit = settings_.limits.max_tls_handshakes;
    if (!rt_.handshakes->available(limit)) {
      const auto spoke = co_await net::with_timeout(socket.async_wait(net::tcp::socket::wait_read, net::as_result),
                                                    deadline - steady_clock::now());
      if (!spoke || std::get<0>(*spoke)) co_return handshake_slots::slot();
    }
    bool waited = false;
    auto slot = co_await rt_.handshakes->acquire(limit, deadline, waited);
    if (waited) rt_.stats->tls_handshake_queued();
    co_return slot;
  }

  // The TLS stream lives in this frame only: the session's own frame holds
  // no second copy of it for the other way of starting TLS.
  net::awaitable<void> serve_tls(net::tcp::socket& socket) {
    const auto deadline = steady_clock::now() + settings_.timeouts.tls_handshake;
    // Taken before the stream exists: a waiting session holds no TLS state.
    auto slot = co_await handshake_slot(socket, deadline);
    if (!slot && rt_.handshakes != nullptr) {
      rt_.stats->tls_handshake(listener_.name, "", "", "timeout");
      log::event("tls_failed").add("session", id_).add("client", peer_ip_).add("reason", "timeout waiting for a handshake slot");
      ended_ = outcome::closed;
      co_return;
    }
    tls_stream stream(std::move(socket), rt_.tls->native_handle());
    socket_ = &stream.socket();
    const bool secured = co_await handshake(stream, deadline - steady_clock::now());
    slot.release();
    if (!secured) {
      ended_ = outcome::closed;
      co_return;
    }
    const outcome result = co_await serve(stream);
    ended_ = result;
    // After QUIT, say goodbye properly; otherwise the peer is already gone.
    if (result == outcome::quit) stream.shutdown();
  }

  // --- the command loop ------------------------------------------------------

  template <typename Stream>
  net::awaitable<outcome> serve(Stream& stream) {
    net::line_io<Stream> io(stream, std::max(settings_.limits.max_command_line, max_auth_line));
    io.observe_replies(this);
    command_label_ = "greeting";
    if (!greeting_sent_) {
      greeting_sent_ = true;
      // RFC 5321 4.3.1: a client must wait for the 220; bulk senders that
      // do not are told so. TLS listeners cannot tell: the client speaks first.
      if (listener_.tls != tls_mode::implicit && settings_.smtp.greeting_delay.count() > 0) {
        std::string_view early;
        const auto status = co_await io.read_raw(early, settings_.smtp.greeting_delay);
        if (status == net::read_status::closed) co_return outcome::closed;
        if (status == net::read_status::line) {
          rt_.stats->connection_rejected("pregreet");
          log::event("connection_rejected")
              .add("session", id_)
              .add("client", peer_ip_)
              .add("reason", "pregreet");
          const outcome ended = co_await last_words(io, replies::talked_before_greeting);
          co_return ended;
        }
      }
      io.queue("220 " + settings_.hostname + " " + settings_.smtp.banner + "\r\n");
    }
    for (;;) {
      smtp::framed_line line;
      const auto status = co_await read_command(io, line);
      command_label_ = "other";
      if (status == net::read_status::timeout) {
        const outcome ended = co_await last_words(io, replies::timeout);
        co_return ended;
      }
      if (status == net::read_status::closed) {
        if (drain_due()) {
          const outcome ended = co_await last_words(io, replies::shutting_down);
          co_return ended;
        }
        co_return outcome::closed;
      }
      if (status == net::read_status::too_long) {
        if (!refuse(io, replies::line_too_long, true)) {
          const outcome ended = co_await close_with(io);
          co_return ended;
        }
        continue;
      }
      if (line.bare_lf || line.has_bare_cr || line.has_nul) {
        if (!refuse(io, replies::bad_characters, true)) {
          const outcome ended = co_await close_with(io);
          co_return ended;
        }
        continue;
      }
      const smtp::command cmd = smtp::parse_command(line.text);
      command_label_ = command_label(cmd.name);
      if (cmd.name != smtp::verb::auth && line.text.size() + 2 > settings_.limits.max_command_line) {
        if (!refuse(io, replies::line_too_long, true)) {
          const outcome ended = co_await close_with(io);
          co_return ended;
        }
        continue;
      }
      const outcome result = co_await execute(io, cmd);
      if (result != outcome::next) co_return result;
    }
  }

  /// The next command line, with the per-read timeout and a total deadline
  /// counted from the line's first byte, so trickling one byte at a time
  /// cannot hold a session open forever.
  template <typename Stream>
  net::awaitable<net::read_status> read_command(net::line_io<Stream>& io, smtp::framed_line& line) {
    std::optional<steady_clock::time_point> started;
    for (;;) {
      switch (io.framer().next(line)) {
        case smtp::frame_status::line:
          co_return net::read_status::line;
        case smtp::frame_status::too_long:
          co_return net::read_status::too_long;
        case smtp::frame_status::need_more:
          break;
      }
      const bool flushed = co_await io.flush(settings_.timeouts.command);
      if (!flushed) co_return net::read_status::closed;
      net::duration limit = settings_.timeouts.command;
      if (io.framer().has_buffered()) {
        const auto now = steady_clock::now();
        if (!started) started = now;
        const net::duration left = *started + settings_.timeouts.command_total - now;
        if (left <= net::duration::zero()) co_return net::read_status::timeout;
        limit = std::min(limit, left);
      }
      if (drain_due()) co_return net::read_status::closed;
      std::string_view chunk;
      idle_ = !state_.in_transaction;
      const auto status = co_await io.read_raw(chunk, limit);
      idle_ = false;
      if (status != net::read_status::line) co_return status;
      io.framer().feed(chunk);
    }
  }

  template <typename Stream>
  net::awaitable<outcome> execute(net::line_io<Stream>& io, const smtp::command& cmd) {
    smtp::decision decision = smtp::decide(state_, policy_, cmd);
    if (!pipelined_.empty() && decision.what != smtp::effect::mail && decision.what != smtp::effect::rcpt) {
      // Decided on assumed outcomes; anything else waits for the real ones.
      co_await settle_pipelined(io);
      decision = smtp::decide(state_, policy_, cmd);
    }
    switch (decision.what) {
      case smtp::effect::reply:
        if (!refuse(io, decision.reply, decision.counts_as_error)) {
          const outcome ended = co_await close_with(io);
          co_return ended;
        }
        co_return outcome::next;
      case smtp::effect::greet:
        co_await greet(io, cmd);
        co_return outcome::next;
      case smtp::effect::start_tls: {
        io.queue(decision.reply);
        const bool flushed = co_await io.flush(settings_.timeouts.command);
        if (!flushed) co_return outcome::closed;
        // RFC 3207 section 4.2 / CVE-2011-0411: anything pipelined after
        // STARTTLS was sent in plaintext and is never executed.
        io.framer().clear();
        co_return outcome::start_tls;
      }
      case smtp::effect::authenticate: {
        const outcome ended = co_await authenticate(io, cmd);
        co_return ended;
      }
      case smtp::effect::mail:
        co_await mail(io, cmd);
        co_return outcome::next;
      case smtp::effect::rcpt:
        co_await rcpt(io, cmd);
        co_return outcome::next;
      case smtp::effect::data: {
        const outcome ended = co_await data(io);
        co_return ended;
      }
      case smtp::effect::rset:
        co_await reset_transaction(io, true);
        co_return outcome::next;
      case smtp::effect::noop:
        if (backend_ && backend_->is_open())
          co_await relay_command(io, "NOOP");
        else
          io.queue(replies::ok);
        co_return outcome::next;
      case smtp::effect::quit:
        io.queue(decision.reply);
        net::close_after_next_write(io.stream());
        co_await io.flush(last_words_timeout);
        co_return outcome::quit;
    }
    co_return outcome::next;
  }

  /// Queues a refusal; false when the client has used up its error budget.
  template <typename Stream>
  bool refuse(net::line_io<Stream>& io, std::string_view text, bool counts_as_error) {
    io.queue(text);
    return !counts_as_error || ++errors_ < settings_.limits.max_errors;
  }

  template <typename Stream>
  net::awaitable<outcome> close_with(net::line_io<Stream>& io) {
    {
      const outcome ended = co_await last_words(io, replies::too_many_errors);
      co_return ended;
    }
  }

  template <typename Stream>
  net::awaitable<outcome> last_words(net::line_io<Stream>& io, std::string_view text) {
    io.queue(text);
    co_await io.flush(last_words_timeout);
    log::event("closed")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("reason", text.substr(0, text.size() - 2));
    co_return outcome::closed;
  }

  // --- EHLO / HELO -----------------------------------------------------------

  template <typename Stream>
  net::awaitable<void> greet(net::line_io<Stream>& io, const smtp::command& cmd) {
    // RFC 5321 4.1.4: EHLO in the middle of a transaction resets it.
    if (state_.in_transaction) co_await reset_transaction(io, false);
    state_.greeted = true;
    state_.extended = cmd.name == smtp::verb::ehlo;
    state_.helo = std::string(cmd.argument.substr(0, 255));
    if (!state_.extended) {
      io.queue("250 " + settings_.hostname + "\r\n");
      co_return;
    }
    smtp::ehlo_offer offer;
    offer.hostname = settings_.hostname;
    offer.client_name = state_.helo;
    offer.starttls = smtp::starttls_offered(state_, policy_);
    if (smtp::auth_offered(state_, policy_))
      offer.auth_mechanisms = offered_mechanisms();
    offer.max_message_size = settings_.limits.max_message_size;
    const auto backend_capabilities = rt_.backend->capabilities();
    std::string text;
    smtp::build_ehlo_reply(*backend_capabilities, offer).append_to(text);
    io.queue(text);
  }

  /// The configured mechanisms, plus EXTERNAL once a verified client
  /// certificate maps to a user.
  std::vector<std::string_view> offered_mechanisms() const {
    std::vector<std::string_view> names(policy_.mechanisms.begin(), policy_.mechanisms.end());
    if (!certificate_user_.empty()) names.push_back(sasl::mechanism_name(sasl::mechanism::external));
    return names;
  }

  // --- AUTH ------------------------------------------------------------------

  template <typename Stream>
  net::awaitable<outcome> authenticate(net::line_io<Stream>& io, const smtp::command& cmd) {
    const auto space = cmd.argument.find(' ');
    const std::string_view name = cmd.argument.substr(0, space);
    const bool has_initial = space != std::string_view::npos;
    const std::string_view initial = has_initial ? cmd.argument.substr(space + 1) : std::string_view{};
    const auto mechanism = sasl::parse_mechanism(name);
    const auto offered = offered_mechanisms();
    const bool enabled = mechanism && std::find(offered.begin(), offered.end(), sasl::mechanism_name(*mechanism)) !=
                                          offered.end();
    if (!enabled) {
      if (!refuse(io, replies::auth_mechanism_unknown, true)) {
        const outcome ended = co_await close_with(io);
        co_return ended;
      }
      co_return outcome::next;
    }
    const std::string_view mechanism_label = sasl::mechanism_name(*mechanism);
    if (lockouts_.ip_locked(client_key_, steady_clock::now())) {
      const outcome ended = co_await locked_out(io, mechanism_label, auth::lockout_scope::ip, {});
      co_return ended;
    }
    sasl::server_exchange exchange(*mechanism, *mechanism == sasl::mechanism::cram_md5
                                                   ? sasl::make_cram_md5_challenge(settings_.hostname)
                                                   : std::string{});
    sasl::step step = exchange.start(initial, has_initial);
    while (step.what == sasl::step::kind::challenge) {
      io.queue("334 " + step.text + "\r\n");
      smtp::framed_line line;
      const auto status = co_await read_command(io, line);
      if (status == net::read_status::timeout) {
        const outcome ended = co_await last_words(io, replies::timeout);
        co_return ended;
      }
      if (status == net::read_status::closed) {
        if (drain_due()) {
          const outcome ended = co_await last_words(io, replies::shutting_down);
          co_return ended;
        }
        co_return outcome::closed;
      }
      if (status == net::read_status::too_long) {
        rt_.stats->auth_attempt(mechanism_label, "malformed");
        io.queue(replies::auth_line_too_long);
        co_return outcome::next;
      }
      step = exchange.respond(line.text);
    }
    if (step.what == sasl::step::kind::cancelled) {
      rt_.stats->auth_attempt(mechanism_label, "cancelled");
      io.queue(replies::auth_cancelled);
      co_return outcome::next;
    }
    if (step.what == sasl::step::kind::malformed) {
      rt_.stats->auth_attempt(mechanism_label, "malformed");
      if (!refuse(io, replies::auth_cannot_decode, true)) {
        const outcome ended = co_await close_with(io);
        co_return ended;
      }
      co_return outcome::next;
    }

    std::string user = std::visit([](const auto& proof) { return proof.user; }, exchange.credentials());
    // Checked the same way whether or not the user exists, so a lockout
    // reveals nothing about which names are real.
    const auto scope = lockouts_.is_locked(client_key_, user, steady_clock::now());
    if (scope != auth::lockout_scope::none) {
      const outcome ended = co_await locked_out(io, mechanism_label, scope, user);
      co_return ended;
    }
    bool valid = false;
    if (*mechanism == sasl::mechanism::external) {
      // RFC 4422 appendix A: the certificate is the credential; the client may
      // only ask to act as the user it maps to.
      valid = user.empty() || user == certificate_user_;
      if (user.empty()) user = certificate_user_;
    } else {
      valid = co_await rt_.verifier->verify(rt_.users, exchange.credentials());
    }
    if (valid) {
      state_.authenticated = true;
      state_.user = user;
      mechanism_ = mechanism_label;
      rt_.stats->auth_attempt(mechanism_label, "success");
      log::event("auth")
          .add("session", id_)
          .add("client", peer_ip_)
          .add("mechanism", mechanism_label)
          .add("user", user)
          .add("result", "success");
      io.queue(replies::auth_succeeded);
      co_return outcome::next;
    }
    ++auth_failures_;
    rt_.stats->auth_attempt(mechanism_label, "failure");
    const auto now = steady_clock::now();
    lockouts_.record_failure(client_key_, user, now);
    if (const auto locked = lockouts_.is_locked(client_key_, user, now); locked != auth::lockout_scope::none)
      log::event("lockout")
          .add("session", id_)
          .add("client", peer_ip_)
          .add("key", client_key_)
          .add("user", user)
          .add("scope", scope_name(locked));
    // A stable line for fail2ban: "event=auth ... client=<ip> ... result=failure".
    log::event("auth")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("mechanism", mechanism_label)
        .add("user", user)
        .add("result", "failure");
    // Slow down guessing; the delay is the same whether the user exists or not.
    asio::steady_timer delay(co_await asio::this_coro::executor, settings_.auth.failure_delay);
    co_await delay.async_wait(net::as_result);
    if (auth_failures_ >= settings_.auth.max_failures) {
      const outcome ended = co_await last_words(io, replies::auth_too_many_failures);
      co_return ended;
    }
    io.queue(replies::auth_invalid);
    co_return outcome::next;
  }

  /// AUTH refused because of a lockout: 454 without looking at the
  /// credentials, after the same delay as a wrong password.
  template <typename Stream>
  net::awaitable<outcome> locked_out(net::line_io<Stream>& io, std::string_view mechanism_label,
                                     auth::lockout_scope scope, const std::string& user) {
    ++auth_failures_;
    rt_.stats->auth_attempt(mechanism_label, "lockout");
    rt_.stats->auth_lockout(scope_name(scope));
    log::event("auth")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("mechanism", mechanism_label)
        .add("user", user)
        .add("result", "lockout")
        .add("scope", scope_name(scope));
    asio::steady_timer delay(co_await asio::this_coro::executor, settings_.auth.failure_delay);
    co_await delay.async_wait(net::as_result);
    if (auth_failures_ >= settings_.auth.max_failures) {
      const outcome ended = co_await last_words(io, replies::auth_too_many_failures);
      co_return ended;
    }
    io.queue(replies::auth_temporary_failure);
    co_return outcome::next;
  }

  // --- the transaction --------------------------------------------------------

  /// Connects to the backend if this session has no live connection yet:
  /// the configured backends in order, the first that connects and greets.
  /// Nothing has been sent to one that failed, so moving on is safe.
  net::awaitable<bool> ensure_backend() {
    if (backend_ && backend_->is_open()) co_return true;
    const auto started = std::chrono::steady_clock::now();
    // The backends the health probe last found up first, in their order; the
    // others after them, since the probe may be out of date.
    std::vector<const backend_server*> order;
    for (const backend_server& server : settings_.backend.servers) order.push_back(&server);
    std::stable_partition(order.begin(), order.end(),
                          [this](const backend_server* server) { return !rt_.backend->down(server->name); });
    const smtp::client_identity client = identity();
    for (const backend_server* candidate : order) {
      const backend_server& server = *candidate;
      if (rt_.pool != nullptr) {
        const std::string key = reuse_key(server, settings_.backend.helo_name);
        backend_ = rt_.pool->take(key, settings_.backend.reuse_lifetime);
      }
      if (backend_) {
        backend_->take_over(server, client);
        backend_address_ = server.name;
        backend_reused_ = true;
        rt_.stats->backend_reused();
        log::event("backend").add("session", id_).add("backend", backend_address_).add("reused", true);
        co_return true;
      }
      std::string failed_stage;
      backend_ = co_await backend_connection::open(server, &client, settings_.backend.helo_name, settings_.timeouts,
                                                   failed_stage, rt_.stats);
      if (backend_) {
        backend_address_ = server.name;
        break;
      }
      rt_.stats->backend_error(failed_stage);
      log::event("backend_failed").add("session", id_).add("backend", server.name).add("stage", failed_stage);
    }
    if (!backend_) co_return false;
    backend_reused_ = false;
    rt_.backend->update(backend_->capabilities());
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    rt_.stats->backend_connected(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    log::event("backend")
        .add("session", id_)
        .add("backend", backend_address_)
        .add("identity", backend_->identity())
        .add("connect_ms", static_cast<std::int64_t>(elapsed.count()))
        .add("reused", false);
    co_return true;
  }

  /// At the session's end: a clean connection (no transaction open, every
  /// reply read) is kept for the thread's next session, if reuse is on;
  /// any other is QUIT.
  net::awaitable<void> release_backend() {
    const backend_config& reuse = settings_.backend;
    const bool keep = rt_.pool != nullptr && reuse.reuse_idle.count() > 0 && !state_.in_transaction &&
                      pipelined_.empty() && !draining_ && backend_->reusable(reuse.reuse_lifetime);
    if (keep) {
      rt_.pool->keep(std::move(backend_), reuse.reuse_idle, reuse.reuse_max_idle);
      co_return;
    }
    co_await backend_->quit();
  }

  /// Who the client is, for the backend.
  smtp::client_identity identity() const {
    smtp::client_identity client;
    client.ip = peer_ip_;
    client.port = peer_port_;
    client.local_ip = local_.address().to_string();
    client.local_port = local_.port();
    client.helo = state_.helo;
    client.esmtp = state_.extended;
    client.user = state_.user;
    return client;
  }

  /// Sends a command to the backend and relays its reply. Returns the reply
  /// code, or 0 when the backend failed (the client then got a 451).
  template <typename Stream>
  net::awaitable<int> relay_command(net::line_io<Stream>& io, std::string_view line) {
    auto answer = co_await backend_->command(line);
    if (!answer) {
      backend_lost(io);
      co_return 0;
    }
    relay_reply(io, *answer);
    co_return answer->code;
  }

  template <typename Stream>
  void relay_reply(net::line_io<Stream>& io, smtp::reply answer) {
    // A backend 421 closes the backend connection, not the client session:
    // tell the client to retry the transaction later instead.
    if (answer.code == 421) {
      answer.code = 451;
      backend_->abort();
      state_.in_transaction = false;
      state_.recipients = 0;
    }
    smtp::ensure_enhanced_codes(answer);
    std::string text;
    answer.append_to(text);
    io.queue(text);
  }

  template <typename Stream>
  void backend_lost(net::line_io<Stream>& io) {
    const backend_failure why = backend_ ? backend_->failure() : backend_failure::gone;
    rt_.stats->backend_error("transaction");
    log::event("backend_lost")
        .add("session", id_)
        .add("backend", backend_address_)
        .add("reason", to_string(why));
    backend_.reset();
    state_.in_transaction = false;
    state_.recipients = 0;
    io.queue(why == backend_failure::protocol ? replies::backend_bad_reply : replies::backend_failed);
  }

  // --- MAIL and RCPT, pipelined to the backend ---------------------------------
  //
  // When the backend has PIPELINING, MAIL and RCPT commands are queued and
  // the commands a client pipelined go to the backend in one write (RFC 2920);
  // the replies are read, relayed in order and settled when the group ends:
  // at the client's last buffered command, or before any command that is not
  // a MAIL or RCPT. Until then the session assumes they succeed (a refused
  // MAIL makes the backend refuse the RCPTs behind it, which is relayed).

  struct pipelined_command {
    bool mail = false;
    std::string mailbox;
  };

  /// The refusal a MAIL or RCPT gets here, before the backend sees it.
  struct local_refusal {
    std::string_view reply;
    bool counts_as_error = false;
  };

  template <typename Stream>
  net::awaitable<void> refuse_in_order(net::line_io<Stream>& io, local_refusal refusal) {
    co_await settle_pipelined(io);
    if (refusal.counts_as_error)
      refuse(io, refusal.reply, true);
    else
      io.queue(refusal.reply);
  }

  std::optional<local_refusal> check_mail(smtp::path_argument& path) {
    smtp::strip_auth_parameter(path);
    if (path.has_8bit && !smtp::has_parameter(path, "SMTPUTF8")) return local_refusal{replies::utf8_needs_smtputf8};
    for (const auto& p : path.parameters) {
      if (p.keyword != "SIZE") continue;
      char* end = nullptr;
      const unsigned long long declared = std::strtoull(p.value.c_str(), &end, 10);
      if (p.value.empty() || *end != '\0') return local_refusal{replies::syntax_error_arguments, true};
      if (declared > settings_.limits.max_message_size) return local_refusal{replies::message_too_big};
    }
    if (!path.mailbox.empty() && !rt_.users->sender_allowed(state_.user, path.mailbox)) {
      log::event("sender_refused").add("session", id_).add("user", state_.user).add("sender", path.mailbox);
      return local_refusal{replies::sender_not_owned};
    }
    return std::nullopt;
  }

  template <typename Stream>
  net::awaitable<void> mail(net::line_io<Stream>& io, const smtp::command& cmd) {
    auto path = smtp::parse_mail_from(cmd.argument);
    if (!path) {
      co_await refuse_in_order(io, {replies::mail_syntax, true});
      co_return;
    }
    if (const auto refusal = check_mail(*path)) {
      co_await refuse_in_order(io, *refusal);
      co_return;
    }
    const bool smtputf8 = smtp::has_parameter(*path, "SMTPUTF8");
    // A kept connection that the backend gave up on just as it was taken
    // (closed it, or is closing it with 421) shows it only at its first
    // command: MAIL then goes again on another connection. No transaction
    // was open on the first one, so nothing is sent twice.
    for (;;) {
      const bool connected = co_await ensure_backend();
      if (!connected) {
        co_await refuse_in_order(io, {replies::backend_unavailable});
        co_return;
      }
      if (!smtp::parameters_supported(*path, backend_->capabilities(), true)) {
        co_await refuse_in_order(io, {replies::parameter_unsupported});
        co_return;
      }
      smtp::path_argument sent = *path;
      // RFC 4954 section 5: to a backend that trusts us, who submitted it.
      if (backend_->takes_mail_auth()) sent.parameters.push_back({"AUTH", smtp::xtext(state_.user), true});
      const std::string line = smtp::format_mail_from(sent);
      if (std::exchange(backend_reused_, false)) {
        auto answer = co_await backend_->command(line);
        const bool gave_up = answer ? answer->code == 421 : backend_->failure() == backend_failure::gone;
        if (gave_up) {
          log::event("backend_stale").add("session", id_).add("backend", backend_address_);
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
  net::awaitable<void> rcpt(net::line_io<Stream>& io, const smtp::command& cmd) {
    auto path = smtp::parse_rcpt_to(cmd.argument);
    if (!path) {
      co_await refuse_in_order(io, {replies::rcpt_syntax, true});
      co_return;
    }
    if (path->has_8bit && !state_.smtputf8) {
      co_await refuse_in_order(io, {replies::utf8_needs_smtputf8});
      co_return;
    }
    if (!backend_ || !backend_->is_open()) {
      co_await settle_pipelined(io);
      backend_lost(io);
      co_return;
    }
    if (!smtp::parameters_supported(*path, backend_->capabilities(), false)) {
      co_await refuse_in_order(io, {replies::parameter_unsupported});
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
      ++state_.recipients;
      last_recipient_ = path->mailbox;
    }
  }

  /// Queues a MAIL or RCPT of a pipelined group and assumes it succeeds
  /// (a RCPT is counted at once, so the recipient limit holds within the
  /// group); the group is settled when the client has no whole command left.
  template <typename Stream>
  net::awaitable<void> pipeline(net::line_io<Stream>& io, std::string_view line, const pipelined_command& sent,
                                bool smtputf8) {
    if (!backend_->queue_command(line)) {
      co_await settle_pipelined(io);
      backend_lost(io);
      co_return;
    }
    if (sent.mail)
      mail_accepted(sent.mailbox, smtputf8);
    else
      ++state_.recipients;
    pipelined_.push_back(sent);
    if (!io.framer().has_line()) co_await settle_pipelined(io);
  }

  void mail_accepted(const std::string& sender, bool smtputf8) {
    state_.in_transaction = true;
    state_.smtputf8 = smtputf8;
    state_.recipients = 0;
    sender_ = sender;
    last_recipient_.clear();
  }

  /// Reads, relays and settles the replies of the queued MAIL and RCPT
  /// commands, so the session's state is the backend's again.
  template <typename Stream>
  net::awaitable<void> settle_pipelined(net::line_io<Stream>& io) {
    const std::string_view label = command_label_;
    bool mail_refused = false;
    // Taken whole: an idle session keeps no buffer for its next group.
    const std::vector<pipelined_command> group = std::exchange(pipelined_, {});
    for (const pipelined_command& sent : group) {
      command_label_ = sent.mail ? "mail" : "rcpt";
      std::optional<smtp::reply> answer;
      if (backend_ && backend_->is_open()) answer = co_await backend_->read_reply(settings_.timeouts.backend_reply);
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
        state_.in_transaction = false;
        state_.recipients = 0;
      } else if (!sent.mail && accepted && state_.in_transaction) {
        last_recipient_ = sent.mailbox;
      } else if (!sent.mail && !accepted && !mail_refused && state_.recipients > 0) {
        --state_.recipients;
      }
    }
    command_label_ = label;
  }

  template <typename Stream>
  net::awaitable<void> reset_transaction(net::line_io<Stream>& io, bool reply) {
    const bool relay = backend_ && backend_->is_open() && state_.in_transaction;
    state_.in_transaction = false;
    state_.recipients = 0;
    if (!relay) {
      if (reply) io.queue(replies::ok);
      co_return;
    }
    auto answer = co_await backend_->command("RSET");
    if (!answer || answer->code != 250) backend_.reset();  // a fresh connection is as good as a reset
    if (reply) io.queue(replies::ok);
  }

  template <typename Stream>
  net::awaitable<outcome> data(net::line_io<Stream>& io) {
    if (!backend_ || !backend_->is_open()) {
      backend_lost(io);
      co_return outcome::next;
    }
    auto go_ahead = co_await backend_->command("DATA");
    if (!go_ahead) {
      backend_lost(io);
      co_return outcome::next;
    }
    if (go_ahead->code != 354) {
      relay_reply(io, *go_ahead);
      co_await reset_transaction(io, false);
      co_return outcome::next;
    }
    io.queue(replies::start_mail_input);
    {
      const outcome ended = co_await transfer_message(io);
      co_return ended;
    }
  }

  std::string received_header() const {
    smtp::received_info info;
    info.helo = state_.helo;
    info.client_ip = peer_ip_;
    info.by_host = settings_.hostname;
    info.protocol = smtp::received_protocol(state_.extended, state_.tls, state_.authenticated);
    info.id = id_;
    info.tls_version = tls_.version;
    info.tls_cipher = tls_.cipher;
    info.user = state_.user;
    if (peer_.presented && peer_.verified) info.client_certificate = peer_.subject;
    if (state_.recipients == 1) info.recipient = last_recipient_;
    info.when = std::time(nullptr);
    return smtp::build_received_header(info);
  }

  /// The message itself: client bytes through the re-framer to the backend,
  /// and 250 to the client only once the backend said 250.
  template <typename Stream>
  net::awaitable<outcome> transfer_message(net::line_io<Stream>& io) {
    const auto transfer_started = steady_clock::now();
    const int recipients = state_.recipients;
    std::string to_backend = received_header();
    state_.in_transaction = false;
    state_.recipients = 0;
    const bool flushed = co_await io.flush(settings_.timeouts.command);
    if (!flushed) {
      backend_->abort();
      backend_.reset();
      co_return outcome::closed;
    }
    smtp::reframer_options framing{settings_.smtp.bare_line_endings, settings_.limits.max_message_size};
    const auto text_line = settings_.limits.max_text_line;
    framing.max_line_length = text_line == 0 ? 0 : text_line - 2;  // the option counts content, not CRLF
    smtp::data_reframer reframer(framing);
    const std::string pipelined = io.framer().take_buffered();
    std::string_view input = pipelined;
    bool backend_ok = true;
    // Only time spent waiting for the client counts against its rate, so a
    // slow backend never gets a client cut off.
    const std::uint64_t min_rate = settings_.timeouts.data_min_rate;
    const net::duration window = settings_.timeouts.data_rate_window;
    const net::duration block_limit = settings_.timeouts.data_block;
    net::duration waited{};
    net::duration idle{};
    std::uint64_t window_bytes = 0;
    for (;;) {
      const auto fed = reframer.feed(input, to_backend);
      if (reframer.error() != smtp::reframe_error::none) to_backend.clear();
      // `input` may view the thread's read buffer: use it up before suspending.
      if (fed.done) io.framer().feed(input.substr(fed.consumed));
      // The Received header waits for the first of the client's bytes: one
      // write to the backend instead of two.
      if (backend_ok && !to_backend.empty() && (fed.done || !input.empty())) {
        backend_ok = co_await backend_->write(to_backend);
        to_backend.clear();
      }
      if (fed.done) break;
      net::duration limit = block_limit - idle;
      const bool window_bound = min_rate > 0 && window - waited < limit;
      if (window_bound) limit = window - waited;
      const auto before = steady_clock::now();
      auto status = co_await io.read_raw(input, limit);
      const net::duration spent = steady_clock::now() - before;
      waited += spent;
      if (status == net::read_status::line) {
        window_bytes += input.size();
        idle = {};
      } else {
        idle += spent;
      }
      bool too_slow = false;
      if (min_rate > 0 && waited >= window) {
        const double seconds_waited = std::chrono::duration<double>(waited).count();
        too_slow = static_cast<double>(window_bytes) < static_cast<double>(min_rate) * seconds_waited;
        waited = {};
        window_bytes = 0;
      }
      if (status == net::read_status::timeout && window_bound && !too_slow) {
        input = {};
        continue;
      }
      if (too_slow || status != net::read_status::line) {
        // The client vanished mid-message: the backend must never see the final dot.
        backend_->abort();
        backend_.reset();
        log::event("message")
            .add("session", id_)
            .add("result", "aborted")
            .add("reason", too_slow ? "too_slow" : status == net::read_status::timeout ? "timeout" : "closed")
            .add("size", reframer.size());
        rt_.stats->message("aborted", reframer.size(), recipients);
        if (too_slow) {
          const outcome ended = co_await last_words(io, replies::data_too_slow);
          co_return ended;
        }
        if (status == net::read_status::timeout) {
          const outcome ended = co_await last_words(io, replies::timeout);
          co_return ended;
        }
        co_return outcome::closed;
      }
    }

    const auto size = reframer.size();
    std::string_view result = "failed";
    std::string_view reason = "backend";
    std::string backend_text;
    std::string queue_id;
    if (reframer.error() != smtp::reframe_error::none) {
      // The backend holds a partial message; dropping the connection is the
      // only way to make sure it is never delivered.
      backend_->abort();
      backend_.reset();
      result = "rejected";
      const bool too_big = reframer.error() == smtp::reframe_error::too_big;
      reason = too_big ? "too_big" : "bare_line_ending";
      io.queue(too_big ? replies::message_too_big : replies::bare_line_ending);
    } else if (!backend_ok) {
      backend_lost(io);
    } else {
      std::optional<smtp::reply> answer = co_await backend_->read_reply(settings_.timeouts.data_end);
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
      }
    }
    log::event("message")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("user", state_.user)
        .add("sender", sender_)
        .add("recipients", recipients)
        .add("size", size)
        .add("result", result)
        .add("reason", reason)
        .add("queue_id", queue_id)
        .add("backend_reply", backend_text)
        .add("duration_ms", static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          steady_clock::now() - transfer_started)
                                                          .count()));
    rt_.stats->message(result, size, recipients);
    co_return outcome::next;
  }

  void on_reply(std::string_view reply) override {
    rt_.stats->reply(command_label_, reply.front());
    const std::string_view reason = replies::rejection_reason(reply);
    if (!reason.empty()) rt_.stats->rejection(reason);
  }

  const listener_config& listener_;
  runtime rt_;
  std::string_view command_label_ = "greeting";
  /// Queued to the backend, replies not read yet, in order. Not a deque:
  /// an empty one already holds a 512-byte block, in every idle session.
  std::vector<pipelined_command> pipelined_;
  std::string backend_address_;              ///< the backend this session's connection goes to
  std::string_view mechanism_;  ///< how the user authenticated: a SASL mechanism or "certificate"
  outcome ended_ = outcome::closed;
  net::tcp::socket* socket_ = nullptr;  ///< the connection under TLS, while serving
  std::uint64_t registration_ = 0;
  bool draining_ = false;
  bool idle_ = false;  ///< waiting for a command outside a transaction
  const config& settings_;
  std::string id_;
  std::string peer_ip_;
  std::uint16_t peer_port_;
  net::tcp::endpoint local_;  ///< the address the client connected to
  std::string client_key_;  ///< what connection limits and lockouts count by
  auth::lockout_table& lockouts_;
  smtp::dialogue_policy policy_;
  smtp::dialogue_state state_;
  tls::connection_info tls_;
  client_cert_mode client_certificates_;
  tls::peer_certificate peer_;
  std::string certificate_user_;  ///< user a verified client certificate maps to
  std::unique_ptr<backend_connection> backend_;
  std::string sender_;
  std::string last_recipient_;
  bool greeting_sent_ = false;
  bool backend_reused_ = false;  ///< the backend connection came kept, and has carried no command yet
  int errors_ = 0;
  int auth_failures_ = 0;
  int messages_ = 0;
};

// Every idle session holds this coroutine's frame, so it is spawned on its
// own once the connection is admitted: nothing admission needed stays in it.
// `slot` is the session's place under the connection limits, held to its end.
net::awaitable<void> serve_admitted(std::unique_ptr<client_session> session, net::tcp::socket socket,
                                    [[maybe_unused]] net::connection_limits::slot slot,
                                    const listener_config& listener,
                                    metrics* stats) {
  const auto started = steady_clock::now();
  stats->session_started();
  try {
    co_await session->run(socket);
  } catch (const std::exception& e) {
    log::event("session_error").add("listener", listener.name).add("error", e.what());
  }
  session.reset();
  stats->session_ended(std::chrono::duration<double>(steady_clock::now() - started).count());
}

}  // namespace

void start_client_session(net::tcp::socket socket, const listener_config& listener, runtime rt,
                          const net::tcp::endpoint& peer, const net::tcp::endpoint& local, std::string client_key,
                          net::connection_limits::slot slot, auth::lockout_table& lockouts) {
  auto* stats = rt.stats;
  auto session = std::make_unique<client_session>(listener, std::move(rt), peer, local, std::move(client_key), lockouts);
  const auto executor = socket.get_executor();
  asio::co_spawn(executor, serve_admitted(std::move(session), std::move(socket), std::move(slot), listener, stats),
                 asio::detached);
}

}  // namespace smtpguard::session
