#include "session/pop3_session.hpp"

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "log.hpp"
#include "net/connect.hpp"
#include "net/line_io.hpp"
#include "net/networks.hpp"
#include "net/timeout.hpp"
#include "pop3/capabilities.hpp"
#include "pop3/command.hpp"
#include "pop3/dialogue.hpp"
#include "pop3/replies.hpp"
#include "pop3/response.hpp"
#include "sasl/claimed_user.hpp"
#include "session/client_session.hpp"
#include "session/handshake_turn.hpp"
#include "session/serve_admitted.hpp"
#include "session/shared_state.hpp"
#include "tls/server_context.hpp"

namespace smtpguard::session {
namespace {

namespace replies = pop3::replies;
using steady_clock = std::chrono::steady_clock;
using tls_stream = net::tls_stream;

// RFC 2449 section 4 allows 255 octets; some clients send longer passwords.
constexpr std::size_t max_command_line = 512;
// RFC 5034 section 4: a SASL response line may be long (as for SMTP AUTH).
constexpr std::size_t max_auth_line = 12288 + 2;
// CAPA lines and SASL challenges from the backend.
constexpr std::size_t max_backend_line = 64 * 1024;
// A CAPA or mechanism list longer than this is not a POP3 server's.
constexpr std::size_t max_list_lines = 200;
// Each direction of a logged-in session's relay has its own buffer.
constexpr std::size_t relay_buffer_size = 16 * 1024;

enum class outcome { start_tls, quit, closed };

// What the backend said, as far as the front needs to know.
struct backend_answer {
  pop3::status status = pop3::status::invalid;
  std::string line;  ///< without CRLF
};

// Half-closes a relayed connection once its other side is done.
void finish_sending(tls_stream& stream) { stream.shutdown(); }
void finish_sending(net::tcp::socket& socket) {
  asio::error_code ignored;
  socket.shutdown(net::tcp::socket::shutdown_send, ignored);
}

class pop3_session {
 public:
  pop3_session(const listener_config& listener, runtime rt, const net::tcp::endpoint& peer, std::string client_key,
               auth::lockout_table& lockouts)
      : listener_(listener),
        rt_(std::move(rt)),
        settings_(*rt_.settings),
        id_(log::new_session_id()),
        peer_ip_(net::unmapped(peer.address()).to_string()),
        peer_port_(peer.port()),
        client_key_(std::move(client_key)),
        lockouts_(lockouts) {
    policy_.stls_listener = listener.tls == tls_mode::starttls;
  }

  ~pop3_session() {
    if (registration_ != 0) rt_.sessions->remove(registration_);
  }
  pop3_session(const pop3_session&) = delete;
  pop3_session& operator=(const pop3_session&) = delete;

  net::awaitable<void> run(net::tcp::socket& socket) {
    if (rt_.sessions != nullptr)
      registration_ = rt_.sessions->add(socket.get_executor(), [this] { begin_drain(); });
    client_socket_ = &socket;
    log::event("connect")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("port", static_cast<int>(peer_port_))
        .add("listener", listener_.name)
        .add("protocol", "pop3");
    const auto started = steady_clock::now();
    outcome ended = outcome::closed;
    if (listener_.tls == tls_mode::starttls) {
      ended = co_await serve(socket);
      if (ended == outcome::start_tls) ended = co_await serve_tls(socket);
    } else {
      ended = co_await serve_tls(socket);
    }
    client_socket_ = nullptr;
    if (backend_socket_) {
      asio::error_code ignored;
      backend_socket_->close(ignored);
    }
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - started);
    log::event("disconnect")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("listener", listener_.name)
        .add("protocol", "pop3")
        .add("tls_version", tls_.version)
        .add("tls_cipher", tls_.cipher)
        .add("user", user_)
        .add("logged_in", logged_in_)
        .add("bytes_to_client", relayed_to_client_)
        .add("bytes_to_backend", relayed_to_backend_)
        .add("result", ended == outcome::quit ? "quit" : "closed")
        .add("duration_ms", static_cast<std::int64_t>(elapsed.count()));
  }

 private:
  // --- draining (SIGTERM) ----------------------------------------------------

  // A session waiting for a command before login is told so and closed; a
  // logged-in one goes on until the drain deadline.
  void begin_drain() {
    draining_ = true;
    if (idle_ && client_socket_ != nullptr) {
      asio::error_code ignored;
      client_socket_->cancel(ignored);
    }
  }

  // --- TLS ---------------------------------------------------------------------

  net::awaitable<outcome> serve_tls(net::tcp::socket& socket) {
    const auto deadline = steady_clock::now() + settings_.timeouts.tls_handshake;
    auto slot = co_await wait_for_handshake_turn(rt_, socket, deadline, {listener_.name, id_, peer_ip_});
    if (!slot) co_return outcome::closed;
    tls_stream stream(std::move(socket), rt_.tls->native_handle());
    client_socket_ = &stream.socket();
    auto done = co_await net::with_timeout(stream.handshake(), deadline - steady_clock::now());
    slot->release();
    if (!done || *done) {
      rt_.stats->tls_handshake(listener_.name, "", "", done ? "error" : "timeout");
      log::event("tls_failed")
          .add("session", id_)
          .add("client", peer_ip_)
          .add("reason", done ? done->message() : std::string("timeout"));
      co_return outcome::closed;
    }
    tls_ = tls::describe(stream.native_handle());
    state_.tls = true;
    rt_.stats->tls_handshake(listener_.name, tls_.version, tls_.cipher, "success");
    log::event("tls").add("session", id_).add("version", tls_.version).add("cipher", tls_.cipher);
    const outcome ended = co_await serve(stream);
    if (ended == outcome::quit) stream.shutdown();
    co_return ended;
  }

  // --- the authorization state -----------------------------------------------

  template <typename Stream>
  net::awaitable<outcome> serve(Stream& stream) {
    net::line_io<Stream> io(stream, max_auth_line);
    if (!backend_socket_) {
      const bool opened = co_await open_backend();
      if (!opened) {
        const outcome ended = co_await last_words(io, replies::backend_unavailable);
        co_return ended;
      }
      // Forwarded as it is: APOP's digest is over the timestamp in it.
      io.queue(greeting_ + "\r\n");
    }
    for (;;) {
      smtp::framed_line line;
      const auto status = co_await read_command(io, line);
      if (status == net::read_status::timeout) {
        const outcome ended = co_await last_words(io, replies::timeout);
        co_return ended;
      }
      if (status == net::read_status::closed) {
        if (draining_) {
          const outcome ended = co_await last_words(io, replies::shutting_down);
          co_return ended;
        }
        co_return outcome::closed;
      }
      if (status == net::read_status::too_long || line.text.size() + 2 > max_command_line) {
        const bool more = refuse(io, replies::line_too_long);
        if (!more) {
          const outcome ended = co_await last_words(io, replies::too_many_errors);
          co_return ended;
        }
        continue;
      }
      // Bare LF is a common client habit and harmless: lines go on as CRLF.
      if (line.has_bare_cr || line.has_nul) {
        const bool more = refuse(io, replies::bad_characters);
        if (!more) {
          const outcome ended = co_await last_words(io, replies::too_many_errors);
          co_return ended;
        }
        continue;
      }
      const pop3::command cmd = pop3::parse_command(line.text);
      const pop3::decision decision = pop3::decide(state_, policy_, cmd);
      // The line is copied: the framer's view dies with the next read.
      const std::string text(line.text);
      std::optional<outcome> ended;
      switch (decision.what) {
        case pop3::effect::reply:
          if (!refuse(io, decision.reply, decision.counts_as_error)) {
            ended = co_await last_words(io, replies::too_many_errors);
          }
          break;
        case pop3::effect::start_tls: {
          io.queue(decision.reply);
          const bool flushed = co_await io.flush(settings_.pop3.idle_timeout);
          // RFC 2595 section 4 / CVE-2011-0411: what was pipelined after STLS
          // came in plaintext and is never executed.
          io.framer().clear();
          ended = flushed ? outcome::start_tls : outcome::closed;
          break;
        }
        case pop3::effect::capa:
          ended = co_await relay_list(io, text, true);
          break;
        case pop3::effect::list_mechanisms:
          ended = co_await relay_list(io, text, false);
          break;
        case pop3::effect::forward:
          ended = co_await relay_user(io, text, cmd.argument);
          break;
        case pop3::effect::login:
        case pop3::effect::auth: {
          std::string user = cmd.name == pop3::verb::apop ? std::string(pop3::user_name(cmd)) : user_;
          std::string mechanism = cmd.name == pop3::verb::pass ? "USER" : "APOP";
          if (decision.what == pop3::effect::auth) {
            const auto space = cmd.argument.find(' ');
            mechanism = std::string(cmd.argument.substr(0, space));
            user = space == std::string_view::npos ? std::string()
                                                   : sasl::claimed_user(mechanism, cmd.argument.substr(space + 1));
          }
          ended = co_await login(io, text, decision.what == pop3::effect::auth, std::move(user), std::move(mechanism));
          if (!ended && logged_in_) {
            const outcome relayed = co_await relay_bytes(io);
            co_return relayed;
          }
          break;
        }
        case pop3::effect::quit:
          ended = co_await quit(io, text);
          break;
      }
      if (ended) co_return *ended;
    }
  }

  // Not a coroutine itself: an idle session holds line_io's frame only.
  template <typename Stream>
  net::awaitable<net::read_status> read_command(net::line_io<Stream>& io, smtp::framed_line& line) {
    return io.read_command(line, settings_.pop3.idle_timeout, settings_.timeouts.command_total,
                           [this] { return draining_; }, &idle_);
  }

  /// Queues a refusal; false when the client has used up its error budget.
  template <typename Stream>
  bool refuse(net::line_io<Stream>& io, std::string_view text, bool counts_as_error = true) {
    io.queue(text);
    return !counts_as_error || ++errors_ < settings_.limits.max_errors;
  }

  template <typename Stream>
  net::awaitable<outcome> last_words(net::line_io<Stream>& io, std::string_view text) {
    io.queue(text);
    co_await io.flush(last_words_timeout);
    log::event("closed").add("session", id_).add("client", peer_ip_).add("reason", text.substr(0, text.size() - 2));
    co_return outcome::closed;
  }

  // --- the backend -------------------------------------------------------------

  net::awaitable<bool> open_backend() {
    backend_socket_.emplace(co_await asio::this_coro::executor);
    const bool connected =
        co_await net::connect_tcp(settings_.pop3.backend, settings_.timeouts.backend_connect, *backend_socket_);
    if (!connected) {
      log::event("backend_failed")
          .add("session", id_)
          .add("backend", settings_.pop3.backend.text)
          .add("stage", "connect");
      co_return false;
    }
    backend_io_ = std::make_unique<net::line_io<net::tcp::socket>>(*backend_socket_, max_backend_line);
    const backend_answer greeting = co_await backend_read();
    if (greeting.status != pop3::status::ok) {
      log::event("backend_failed")
          .add("session", id_)
          .add("backend", settings_.pop3.backend.text)
          .add("stage", "greeting")
          .add("reply", greeting.line);
      co_return false;
    }
    greeting_ = greeting.line;
    co_return true;
  }

  net::awaitable<backend_answer> backend_read() {
    smtp::framed_line line;
    const auto status = co_await backend_io_->read_line(line, settings_.timeouts.backend_reply);
    backend_answer answer;
    if (status != net::read_status::line || line.has_nul || line.has_bare_cr) co_return answer;
    answer.line = std::string(line.text);
    answer.status = pop3::classify(line.text);
    co_return answer;
  }

  /// Sends one line to the backend and reads its status line.
  net::awaitable<backend_answer> backend_command(std::string_view line) {
    backend_io_->queue(line);
    backend_io_->queue("\r\n");
    const backend_answer answer = co_await backend_read();
    co_return answer;
  }

  template <typename Stream>
  net::awaitable<outcome> backend_failed(net::line_io<Stream>& io, const backend_answer& answer) {
    log::event("backend_failed")
        .add("session", id_)
        .add("backend", settings_.pop3.backend.text)
        .add("stage", "authorization")
        .add("reply", answer.line);
    const outcome ended = co_await last_words(io, replies::backend_unavailable);
    co_return ended;
  }

  /// CAPA, or a bare AUTH listing the mechanisms: the backend's multi-line
  /// answer, filtered (pop3/capabilities.hpp).
  template <typename Stream>
  net::awaitable<std::optional<outcome>> relay_list(net::line_io<Stream>& io, std::string_view line, bool capa) {
    const backend_answer status = co_await backend_command(line);
    if (status.status == pop3::status::err) {
      io.queue(status.line + "\r\n");
      co_return std::nullopt;
    }
    if (status.status != pop3::status::ok) {
      const outcome ended = co_await backend_failed(io, status);
      co_return ended;
    }
    std::vector<std::string> lines;
    for (;;) {
      smtp::framed_line item;
      const auto read = co_await backend_io_->read_line(item, settings_.timeouts.backend_reply);
      if (read != net::read_status::line || item.has_nul || lines.size() > max_list_lines) {
        const outcome ended = co_await backend_failed(io, status);
        co_return ended;
      }
      if (pop3::ends_multiline(item.text)) break;
      lines.emplace_back(item.text);
    }
    std::string out = status.line + "\r\n";
    if (capa) {
      pop3::capability_offer offer;
      offer.stls = policy_.stls_listener && !state_.tls;
      offer.login = state_.tls;
      lines = pop3::filter_capabilities(lines, offer);
    }
    for (const auto& item : lines)
      if (capa || pop3::mechanism_passes(item)) out += item + "\r\n";
    out += ".\r\n";
    io.queue(out);
    co_return std::nullopt;
  }

  /// USER: relayed; the name is remembered for PASS's log line and lockouts.
  template <typename Stream>
  net::awaitable<std::optional<outcome>> relay_user(net::line_io<Stream>& io, std::string_view line,
                                                    std::string_view name) {
    const backend_answer answer = co_await backend_command(line);
    if (answer.status != pop3::status::ok && answer.status != pop3::status::err) {
      const outcome ended = co_await backend_failed(io, answer);
      co_return ended;
    }
    user_ = answer.status == pop3::status::ok ? std::string(name.substr(0, 255)) : std::string();
    io.queue(answer.line + "\r\n");
    co_return std::nullopt;
  }

  /// The client's responses to the backend's SASL challenges, relayed one
  /// for one until `answer` is no longer a continuation. `user` is taken from
  /// the first response when the AUTH command had none; `cancelled` is set
  /// when the client or the front gave up. An outcome when the session ends.
  template <typename Stream>
  net::awaitable<std::optional<outcome>> relay_sasl(net::line_io<Stream>& io, backend_answer& answer,
                                                    std::string& user, const std::string& mechanism,
                                                    bool& cancelled) {
    while (answer.status == pop3::status::continuation) {
      io.queue(answer.line + "\r\n");
      smtp::framed_line response;
      const auto status = co_await read_command(io, response);
      if (status == net::read_status::timeout) {
        const outcome ended = co_await last_words(io, replies::timeout);
        co_return ended;
      }
      if (status != net::read_status::line && status != net::read_status::too_long) co_return outcome::closed;
      // RFC 5034 section 4: "*" cancels; so does a line the front cannot pass on.
      const bool usable = status == net::read_status::line && !response.has_nul && !response.has_bare_cr;
      cancelled = !usable || response.text == "*";
      // Without an initial response, the first one names the user (PLAIN,
      // LOGIN, ...): a locked user's exchange is cancelled before the backend
      // sees a password.
      if (usable && !cancelled && user.empty()) {
        user = sasl::claimed_user(mechanism, response.text);
        const auto locked = co_await shared_.locked(client_key_, user);
        if (locked != auth::lockout_scope::none) {
          const std::string cancel = "*";
          answer = co_await backend_command(cancel);  // its -ERR is not the client's business
          rt_.stats->auth_lockout(locked == auth::lockout_scope::ip ? "ip" : "user");
          const outcome ended = co_await last_words(io, replies::locked_out);
          co_return ended;
        }
      }
      const std::string text = usable ? std::string(response.text) : std::string("*");
      answer = co_await backend_command(text);
      if (!usable && answer.status == pop3::status::err)
        answer.line = std::string(replies::line_too_long.substr(0, replies::line_too_long.size() - 2));
    }
    co_return std::nullopt;
  }

  /// PASS, APOP or an AUTH exchange, relayed step by step; the backend's
  /// final +OK is a login. Sets logged_in_ on success.
  template <typename Stream>
  net::awaitable<std::optional<outcome>> login(net::line_io<Stream>& io, std::string_view line, bool sasl,
                                               std::string user, std::string mechanism) {
    const auto scope = co_await shared_.locked(client_key_, user);
    if (scope != auth::lockout_scope::none) {
      rt_.stats->auth_lockout(scope == auth::lockout_scope::ip ? "ip" : "user");
      const outcome ended = co_await last_words(io, replies::locked_out);
      co_return ended;
    }
    backend_answer answer = co_await backend_command(line);
    bool cancelled = false;
    if (sasl) {
      const auto ended = co_await relay_sasl(io, answer, user, mechanism, cancelled);
      if (ended) co_return *ended;
    }
    if (answer.status != pop3::status::ok && answer.status != pop3::status::err) {
      const outcome ended = co_await backend_failed(io, answer);
      co_return ended;
    }
    io.queue(answer.line + "\r\n");
    const bool success = answer.status == pop3::status::ok;
    if (!success && cancelled) co_return std::nullopt;
    rt_.stats->pop3_login(listener_.name, success ? "success" : "failure");
    if (success) {
      logged_in_ = true;
      user_ = user;
      co_await shared_.grant_relay(peer_ip_, settings_.pop3.relay_ttl);
      log::event("pop3_login")
          .add("session", id_)
          .add("client", peer_ip_)
          .add("listener", listener_.name)
          .add("user", user)
          .add("mechanism", mechanism)
          .add("relay_ttl_s", static_cast<std::int64_t>(settings_.pop3.relay_ttl.count()));
      co_return std::nullopt;
    }
    co_await shared_.record_failure(client_key_, user);
    log::event("pop3_login_failed")
        .add("session", id_)
        .add("client", peer_ip_)
        .add("listener", listener_.name)
        .add("user", user)
        .add("mechanism", mechanism);
    // As for SMTP AUTH, guessing is slowed here, whatever the backend does
    // (qpopper, say, answers at once). The -ERR waits in the output buffer.
    asio::steady_timer delay(co_await asio::this_coro::executor, settings_.auth.failure_delay);
    co_await delay.async_wait(net::as_result);
    if (++failures_ >= settings_.auth.max_failures) {
      const outcome ended = co_await last_words(io, replies::too_many_failures);
      co_return ended;
    }
    co_return std::nullopt;
  }

  template <typename Stream>
  net::awaitable<std::optional<outcome>> quit(net::line_io<Stream>& io, std::string_view line) {
    const backend_answer answer = co_await backend_command(line);
    io.queue(answer.status == pop3::status::ok ? answer.line + "\r\n" : std::string("+OK Bye\r\n"));
    net::close_after_next_write(io.stream());
    co_await io.flush(last_words_timeout);
    co_return outcome::quit;
  }

  // --- the transaction state: bytes both ways --------------------------------

  template <typename Stream>
  net::awaitable<outcome> relay_bytes(net::line_io<Stream>& io) {
    const bool flushed = co_await io.flush(settings_.pop3.idle_timeout);
    if (!flushed) co_return outcome::closed;
    // Commands the client pipelined behind its login go first, in order.
    const std::string early = io.framer().take_buffered();
    if (!early.empty()) {
      backend_io_->queue(early);
      relayed_to_backend_ += early.size();
    }
    const bool sent = co_await backend_io_->flush(settings_.pop3.idle_timeout);
    if (!sent) co_return outcome::closed;
    const std::string late = backend_io_->framer().take_buffered();
    if (!late.empty()) {
      const bool written = co_await io.write(late, settings_.pop3.idle_timeout);
      if (!written) co_return outcome::closed;
      relayed_to_client_ += late.size();
    }
    last_activity_ = steady_clock::now();
    using namespace asio::experimental::awaitable_operators;
    auto up = pump(io.stream(), *backend_socket_, relayed_to_backend_);
    auto down = pump(*backend_socket_, io.stream(), relayed_to_client_);
    const auto finished = co_await (std::move(up) || std::move(down));
    if (finished.index() == 0)
      finish_sending(*backend_socket_);
    else
      finish_sending(io.stream());
    co_return outcome::closed;
  }

  /// Copies `from` to `to` until `from` ends, either side fails, or neither
  /// direction has moved a byte for the idle timeout.
  template <typename From, typename To>
  net::awaitable<void> pump(From& from, To& to, std::uint64_t& counted) {
    std::vector<char> buffer(relay_buffer_size);
    const net::duration idle = settings_.pop3.idle_timeout;
    for (;;) {
      const std::span<char> room(buffer);
      auto read = net::read_some(from, room);
      auto got = co_await net::with_timeout(std::move(read), idle);
      if (!got) {
        if (steady_clock::now() - last_activity_ < idle) continue;
        co_return;
      }
      if (got->error || got->bytes == 0) co_return;
      last_activity_ = steady_clock::now();
      const std::string_view bytes(buffer.data(), got->bytes);
      auto write = net::write_all(to, bytes);
      auto written = co_await net::with_timeout(std::move(write), idle);
      if (!written || *written) co_return;
      counted += bytes.size();
      last_activity_ = steady_clock::now();
    }
  }

  const listener_config& listener_;
  runtime rt_;
  const config& settings_;
  std::string id_;
  std::string peer_ip_;  ///< what grants are keyed by
  std::uint16_t peer_port_;
  std::string client_key_;  ///< what connection limits and lockouts count by
  auth::lockout_table& lockouts_;
  shared_state shared_{rt_, lockouts_};
  std::uint64_t registration_ = 0;
  net::tcp::socket* client_socket_ = nullptr;  ///< for drain's cancel
  bool draining_ = false;
  bool idle_ = false;
  pop3::dialogue_policy policy_;
  pop3::dialogue_state state_;
  tls::connection_info tls_;
  std::optional<net::tcp::socket> backend_socket_;
  std::unique_ptr<net::line_io<net::tcp::socket>> backend_io_;
  std::string greeting_;
  std::string user_;  ///< from an accepted USER, or the login's
  bool logged_in_ = false;
  int errors_ = 0;
  int failures_ = 0;
  steady_clock::time_point last_activity_;
  std::uint64_t relayed_to_client_ = 0;
  std::uint64_t relayed_to_backend_ = 0;
};

}  // namespace

void start_pop3_session(net::tcp::socket socket, const listener_config& listener, runtime rt,
                        const net::tcp::endpoint& peer, std::string client_key, net::connection_limits::slot slot,
                        auth::lockout_table& lockouts) {
  auto* stats = rt.stats;
  auto session = std::make_unique<pop3_session>(listener, std::move(rt), peer, std::move(client_key), lockouts);
  spawn_admitted(std::move(session), std::move(socket), std::move(slot), listener, stats);
}

}  // namespace smtpguard::session
