#include "session/client_session.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
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
#include "net/networks.hpp"
#include "net/timeout.hpp"
#include "sasl/exchange.hpp"
#include "tls/channel_binding.hpp"
#include "session/handshake_turn.hpp"
#include "session/serve_admitted.hpp"
#include "session/shared_state.hpp"
#include "session/transaction.hpp"
#include "smtp/capabilities.hpp"
#include "smtp/command.hpp"
#include "smtp/dialogue.hpp"
#include "smtp/identity.hpp"
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
        id_(log::new_session_id()),
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
    trusted_network_ = net::in_networks(peer.address(), settings_.relay.trusted_networks);
    policy_.trusted_client = trusted_network_;
    policy_.mx = listener.role == listener_role::mx;
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
    if (!trusted_network_ && rt_.pop_grants != nullptr) {
      pop_before_smtp_ = co_await shared_.relay_granted(grant_key());
      policy_.trusted_client = pop_before_smtp_;
    }
    {
      log::event connected("connect");
      connected.add("session", id_)
          .add("client", peer_ip_)
          .add("port", static_cast<int>(peer_port_))
          .add("listener", listener_.name)
          .add("trusted_network", trusted_network_);
      if (rt_.pop_grants != nullptr) connected.add("pop_before_smtp", pop_before_smtp_);
    }
    const auto started = steady_clock::now();
    if (policy_.mx && !policy_.trusted_client && rt_.dns != nullptr && !settings_.relay.dnsbl_zones.empty())
      dnsbl_ = dnsbl_check::start(*rt_.dns, asio::ip::make_address(peer_ip_), settings_.relay.dnsbl_zones,
                                  settings_.relay.dnsbl_timeout);
    bool secure = listener_.tls == tls_mode::implicit;
    if (!secure) {
      ended_ = co_await serve(socket);
      secure = ended_ == outcome::start_tls;
      // RFC 3207 section 4.2: forget everything learned before TLS.
      if (secure) state_ = smtp::after_starttls();
    }
    if (secure) co_await serve_tls(socket);
    socket_ = nullptr;
    if (transaction_) co_await transaction_->end(draining_);
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
        .add("messages", transaction_ ? transaction_->messages() : 0)
        .add("result", ended_ == outcome::quit ? "quit" : "closed")
        .add("duration_ms", static_cast<std::int64_t>(elapsed.count()));
  }

 private:
  /// What POP-before-SMTP grants are keyed by: the exact address, unmapped.
  std::string grant_key() const { return net::unmapped(asio::ip::make_address(peer_ip_)).to_string(); }

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
    channel_binding_ = tls::can_bind(stream.native_handle());
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

  // The TLS stream lives in this frame only: the session's own frame holds
  // no second copy of it for the other way of starting TLS.
  net::awaitable<void> serve_tls(net::tcp::socket& socket) {
    const auto deadline = steady_clock::now() + settings_.timeouts.tls_handshake;
    // Taken before the stream exists: a waiting session holds no TLS state.
    auto slot = co_await wait_for_handshake_turn(rt_, socket, deadline, {listener_.name, id_, peer_ip_});
    if (!slot) {
      ended_ = outcome::closed;
      co_return;
    }
    tls_stream stream(std::move(socket), rt_.tls->native_handle());
    socket_ = &stream.socket();
    const bool secured = co_await handshake(stream, deadline - steady_clock::now());
    slot->release();
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

  // Not a coroutine itself: an idle session holds line_io's frame only.
  template <typename Stream>
  net::awaitable<net::read_status> read_command(net::line_io<Stream>& io, smtp::framed_line& line) {
    return io.read_command(line, settings_.timeouts.command, settings_.timeouts.command_total,
                           [this] { return drain_due(); }, state_.in_transaction ? nullptr : &idle_);
  }

  template <typename Stream>
  net::awaitable<outcome> execute(net::line_io<Stream>& io, const smtp::command& cmd) {
    // A client may log in to POP3 after connecting here, before its MAIL.
    if (cmd.name == smtp::verb::mail && !policy_.trusted_client && !state_.authenticated && rt_.pop_grants != nullptr) {
      const bool granted = co_await shared_.relay_granted(grant_key());
      if (granted) {
        pop_before_smtp_ = true;
        policy_.trusted_client = true;
        log::event("pop_before_smtp").add("session", id_).add("client", peer_ip_);
      }
    }
    smtp::decision decision = smtp::decide(state_, policy_, cmd);
    if (transaction_ && transaction_->unsettled() && decision.what != smtp::effect::mail && decision.what != smtp::effect::rcpt) {
      // Decided on assumed outcomes; anything else waits for the real ones.
      co_await transaction_->settle(io);
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
        co_await relay().rcpt(io, cmd);
        co_return outcome::next;
      case smtp::effect::data: {
        const outcome ended = co_await data(io);
        co_return ended;
      }
      case smtp::effect::rset:
        co_await relay().reset(io, true);
        co_return outcome::next;
      case smtp::effect::noop:
        co_await relay().noop(io);
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
    if (state_.in_transaction) co_await relay().reset(io, false);
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
  /// certificate maps to a user; SCRAM-SHA-256-PLUS only on a TLS
  /// connection it can bind to.
  std::vector<std::string_view> offered_mechanisms() const {
    std::vector<std::string_view> names;
    for (const auto& name : policy_.mechanisms)
      if (channel_binding_ || name != sasl::mechanism_name(sasl::mechanism::scram_sha_256_plus))
        names.push_back(name);
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
    const bool ip_locked = co_await shared_.ip_locked(client_key_);
    if (ip_locked) {
      const outcome ended = co_await locked_out(io, mechanism_label, auth::lockout_scope::ip, {});
      co_return ended;
    }
    sasl::server_exchange exchange = new_exchange(*mechanism, tls_of(io.stream()), offered);
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
    const auto scope = co_await shared_.locked(client_key_, user);
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
    const auto locked = co_await shared_.record_failure(client_key_, user);
    if (locked != auth::lockout_scope::none)
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

  static SSL* tls_of(tls_stream& stream) { return stream.native_handle(); }
  static SSL* tls_of(net::tcp::socket&) { return nullptr; }

  /// Made outside the coroutine, so that what only some mechanisms need
  /// does not take room in every AUTH's frame. `ssl`: the connection's TLS,
  /// or null on a plaintext one; `offered`: offered_mechanisms().
  sasl::server_exchange new_exchange(sasl::mechanism mechanism, SSL* ssl,
                                     const std::vector<std::string_view>& offered) const {
    if (mechanism == sasl::mechanism::cram_md5)
      return sasl::server_exchange(mechanism, sasl::make_cram_md5_challenge(settings_.hostname));
    if (mechanism == sasl::mechanism::digest_md5)
      return sasl::server_exchange(
          mechanism, {}, {},
          {[users = rt_.users](std::string_view user) { return users->digest_md5_secret_for(user); },
           settings_.auth.realm, sasl::make_scram_nonce()});
    if (mechanism != sasl::mechanism::scram_sha_256 && mechanism != sasl::mechanism::scram_sha_256_plus)
      return sasl::server_exchange(mechanism);
    sasl::scram_setup scram{[users = rt_.users](std::string_view user) { return users->scram_secret_for(user); },
                            sasl::make_scram_nonce(),
                            {}};
    scram.binding.plus_offered = std::find(offered.begin(), offered.end(), sasl::mechanism_name(
                                               sasl::mechanism::scram_sha_256_plus)) != offered.end();
    if (ssl != nullptr)
      scram.binding.data = [ssl](std::string_view type) { return tls::channel_binding(ssl, type); };
    return sasl::server_exchange(mechanism, {}, std::move(scram));
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

  /// The session's transaction, made on first use.
  transaction& relay() {
    if (!transaction_)
      transaction_ = std::make_unique<transaction>(
          session_view{settings_, rt_, id_, peer_ip_, client_key_, trusted_network_, state_, policy_,
                                    dnsbl_.get(), command_label_, errors_});
    return *transaction_;
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

  /// The Received header's facts; the transaction adds the recipient and the time.
  smtp::received_info trace() const {
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
    return info;
  }

  template <typename Stream>
  net::awaitable<void> mail(net::line_io<Stream>& io, const smtp::command& cmd) {
    const smtp::client_identity client = identity();
    co_await relay().mail(io, cmd, client);
  }

  template <typename Stream>
  net::awaitable<outcome> data(net::line_io<Stream>& io) {
    const smtp::received_info received = trace();
    const data_outcome done = co_await relay().data(io, received);
    if (!done.close) co_return outcome::next;
    if (done.last_words.empty()) co_return outcome::closed;
    const outcome ended = co_await last_words(io, done.last_words);
    co_return ended;
  }

  void on_reply(std::string_view reply) override {
    rt_.stats->reply(command_label_, reply.front());
    const std::string_view reason = replies::rejection_reason(reply);
    if (!reason.empty()) rt_.stats->rejection(reason);
  }

  const listener_config& listener_;
  runtime rt_;
  std::string_view command_label_ = "greeting";
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
  shared_state shared_{rt_, lockouts_};
  smtp::dialogue_policy policy_;
  smtp::dialogue_state state_;
  tls::connection_info tls_;
  client_cert_mode client_certificates_;
  tls::peer_certificate peer_;
  std::string certificate_user_;  ///< user a verified client certificate maps to
  bool greeting_sent_ = false;
  bool channel_binding_ = false;  ///< the TLS connection can bind SCRAM-SHA-256-PLUS
  bool trusted_network_ = false;  ///< the client's address is in relay.trusted_networks
  bool pop_before_smtp_ = false;  ///< relay allowed by a recent POP3 login from the client's address
  int errors_ = 0;
  int auth_failures_ = 0;
  /// Made when a command first needs it (see relay()): an idle session
  /// that has sent no mail does not hold one.
  std::unique_ptr<transaction> transaction_;
  /// Asked at the start of an MX session whose client may not relay.
  std::shared_ptr<dnsbl_check> dnsbl_;
};

}  // namespace

void start_client_session(net::tcp::socket socket, const listener_config& listener, runtime rt,
                          const net::tcp::endpoint& peer, const net::tcp::endpoint& local, std::string client_key,
                          net::connection_limits::slot slot, auth::lockout_table& lockouts) {
  auto* stats = rt.stats;
  auto session =
      std::make_unique<client_session>(listener, std::move(rt), peer, local, std::move(client_key), lockouts);
  spawn_admitted(std::move(session), std::move(socket), std::move(slot), listener, stats);
}

}  // namespace smtpguard::session
