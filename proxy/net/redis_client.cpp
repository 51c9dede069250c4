#include "net/redis_client.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <asio/ip/address.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <cctype>
#include <utility>

namespace smtpguard::net {
namespace {

redis_reply convert(const redisReply& from) {
  redis_reply to;
  switch (from.type) {
    case REDIS_REPLY_STRING:
      to.kind = redis_reply::type::string;
      to.text.assign(from.str, from.len);
      break;
    case REDIS_REPLY_STATUS:
      to.kind = redis_reply::type::status;
      to.text.assign(from.str, from.len);
      break;
    case REDIS_REPLY_ERROR:
      to.kind = redis_reply::type::error;
      to.text.assign(from.str, from.len);
      break;
    case REDIS_REPLY_INTEGER:
      to.kind = redis_reply::type::integer;
      to.integer = from.integer;
      break;
    case REDIS_REPLY_ARRAY:
      to.kind = redis_reply::type::array;
      to.items.reserve(from.elements);
      for (std::size_t i = 0; i < from.elements; ++i) to.items.push_back(convert(*from.element[i]));
      break;
    default:
      break;
  }
  return to;
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// Each call's callback is freed after its one reply. Subscriptions and
// MONITOR make hiredis call it again and again (and later replies without a
// callback abort hiredis); CLIENT REPLY OFF/SKIP leaves it waiting forever.
bool one_reply_each(const std::vector<std::string>& arguments) {
  const std::string name = lowercase(arguments.front());
  for (const char* streaming :
       {"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe", "monitor"})
    if (name == streaming) return false;
  return !(name == "client" && arguments.size() > 1 && lowercase(arguments[1]) == "reply");
}

}  // namespace

// The socket of one hiredis context. Shared with the waits under way, so a
// wait that completes after hiredis let go finds `context` null.
struct redis_client::watcher : std::enable_shared_from_this<watcher> {
  watcher(const asio::any_io_executor& executor, redis_client* client, redisAsyncContext* async_context)
      : descriptor(executor), owner(client), context(async_context) {}
  // The socket is hiredis's, which closes it: Asio must never do so.
  ~watcher() {
    if (descriptor.is_open()) descriptor.release();
  }
  watcher(const watcher&) = delete;
  watcher& operator=(const watcher&) = delete;

  // hiredis's hooks are idempotent requests; like libev's watchers, a wanted
  // event stays watched until hiredis says otherwise.
  void want(bool for_write, bool wanted) {
    (for_write ? want_write : want_read) = wanted;
    if (wanted && context && !(for_write ? writing : reading)) wait(for_write);
  }

  void wait(bool for_write) {
    (for_write ? writing : reading) = true;
    using kind = asio::posix::stream_descriptor;
    descriptor.async_wait(for_write ? kind::wait_write : kind::wait_read,
                          [self = shared_from_this(), for_write](const asio::error_code& error) {
                            (for_write ? self->writing : self->reading) = false;
                            if (error || !self->context) return;
                            if (!(for_write ? self->want_write : self->want_read)) return;
                            // May free the context, which detaches this watcher.
                            if (for_write)
                              redisAsyncHandleWrite(self->context);
                            else
                              redisAsyncHandleRead(self->context);
                            // hiredis does not always ask again (a connect still under
                            // way, say): keep watching what it still wants.
                            self->want(for_write, for_write ? self->want_write : self->want_read);
                          });
  }

  asio::posix::stream_descriptor descriptor;
  redis_client* owner;         ///< null once detached
  redisAsyncContext* context;  ///< null once hiredis let go of the socket
  bool want_read = false;
  bool want_write = false;
  bool reading = false;  ///< a read wait is under way
  bool writing = false;
};

// One call, shared by its coroutine and its hiredis callback (which may run
// after the coroutine gave up, or while the client is being destroyed).
struct redis_client::pending {
  pending(const asio::any_io_executor& executor, clock::time_point deadline) : timer(executor, deadline) {}
  asio::steady_timer timer;  ///< the coroutine waits here; the reply makes it expire at once
  bool done = false;         ///< hiredis called back, with a reply or without
  std::optional<redis_reply> reply;
};

// A connection being opened: its host name looked up, then the login. Other
// calls wait for it, so that they all end up on the one connection.
struct redis_client::opening {
  opening(const asio::any_io_executor& executor, clock::time_point deadline)
      : resolved(executor, deadline), ready(executor, clock::time_point::max()) {}
  asio::steady_timer resolved;  ///< the opening call waits here for the lookup
  asio::steady_timer ready;     ///< other calls wait here, for the connection
  bool found = false;
  tcp::endpoint address;
};

redis_client::redis_client(asio::any_io_executor executor, endpoint address,
                           std::chrono::milliseconds timeout, redis_login login)
    : executor_(std::move(executor)), address_(std::move(address)), timeout_(timeout), login_(std::move(login)) {}

redis_client::~redis_client() {
  alive_.reset();
  if (opening_) {
    opening_->resolved.expires_at(clock::time_point::min());
    opening_->ready.expires_at(clock::time_point::min());
  }
  if (context_) {
    context_->data = nullptr;
    // Runs every pending callback without a reply, then the cleanup hook.
    redisAsyncFree(context_);
  }
}

bool redis_client::connected() const noexcept { return connected_; }

awaitable<std::optional<redis_reply>> redis_client::call(std::vector<std::string> arguments) {
  const auto deadline = clock::now() + timeout_;
  const std::weak_ptr<bool> alive = alive_;
  if (arguments.empty() || !one_reply_each(arguments)) co_return std::nullopt;
  if (!context_ || opening_) {
    const bool opened = co_await open(deadline);
    if (alive.expired()) co_return std::nullopt;
    if (!opened || !context_) {
      if (refusal_.empty()) co_return std::nullopt;
      co_return redis_reply{redis_reply::type::error, 0, refusal_, {}};
    }
  }
  const std::vector<std::string_view> views(arguments.begin(), arguments.end());
  auto reply = co_await exchange(views, deadline);
  co_return reply;
}

awaitable<std::optional<redis_reply>> redis_client::exchange(const std::vector<std::string_view>& arguments,
                                                             clock::time_point deadline) {
  const std::weak_ptr<bool> alive = alive_;
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(arguments.size());
  lengths.reserve(arguments.size());
  for (const auto& argument : arguments) {
    argv.push_back(argument.data());
    lengths.push_back(argument.size());
  }
  auto state = std::make_shared<pending>(executor_, deadline);
  // hiredis holds a reference until it calls back, which it does exactly
  // once for every command it accepted, if need be without a reply.
  auto* privdata = new std::shared_ptr<pending>(state);
  if (redisAsyncCommandArgv(context_, on_reply, privdata, static_cast<int>(argv.size()), argv.data(),
                            lengths.data()) != REDIS_OK) {
    delete privdata;
    co_return std::nullopt;
  }
  const auto generation = generation_;
  if (!state->done) {
    co_await state->timer.async_wait(as_result);
  }
  if (state->done) co_return std::move(state->reply);
  // Woken early: the caller cancelled the call (a `||` around it, say). The
  // reply still comes, to a callback that expects nobody.
  if (clock::now() < deadline) co_return std::nullopt;
  // Replies come in order: with this one missing, the connection is useless.
  if (!alive.expired() && context_ && generation_ == generation) redisAsyncFree(context_);
  co_return std::nullopt;
}

awaitable<bool> redis_client::open(clock::time_point deadline) {
  const std::weak_ptr<bool> alive = alive_;
  if (opening_) {
    const auto attempt = opening_;
    co_await attempt->ready.async_wait(as_result);
    if (alive.expired()) co_return false;
    co_return context_ != nullptr && !opening_;
  }
  refusal_.clear();
  const auto attempt = std::make_shared<opening>(executor_, deadline);
  opening_ = attempt;
  bool opened = co_await connect(deadline);
  if (alive.expired()) co_return false;
  if (opened) {
    opened = co_await log_in(deadline);
    if (alive.expired()) co_return false;
  }
  opening_.reset();
  attempt->ready.expires_at(clock::time_point::min());
  co_return opened;
}

awaitable<bool> redis_client::connect(clock::time_point deadline) {
  if (!address_.unix_path.empty()) co_return start(redisAsyncConnectUnix(address_.unix_path.c_str()));
  std::error_code not_literal;
  (void)asio::ip::make_address(address_.host, not_literal);
  if (!not_literal) co_return start(redisAsyncConnect(address_.host.c_str(), address_.port));

  // hiredis would look a name up with a blocking getaddrinfo(): look it up
  // here, and hand hiredis the address.
  const std::weak_ptr<bool> alive = alive_;
  const auto attempt = opening_;
  tcp::resolver resolver(executor_);
  const std::string port = std::to_string(address_.port);
  resolver.async_resolve(address_.host, port,
                         [attempt](const std::error_code& error, const tcp::resolver::results_type& results) {
                           if (!error && !results.empty()) {
                             // IPv4 first, as hiredis itself does.
                             attempt->address = results.begin()->endpoint();
                             for (const auto& entry : results) {
                               if (entry.endpoint().address().is_v4()) {
                                 attempt->address = entry.endpoint();
                                 break;
                               }
                             }
                             attempt->found = true;
                           }
                           attempt->resolved.expires_at(clock::time_point::min());
                         });
  // The resolver cannot interrupt a getaddrinfo() under way: at the deadline
  // the call gives up and leaves the lookup to finish on its own.
  co_await attempt->resolved.async_wait(as_result);
  if (alive.expired() || !attempt->found || clock::now() >= deadline) co_return false;
  const std::string ip = attempt->address.address().to_string();
  co_return start(redisAsyncConnect(ip.c_str(), attempt->address.port()));
}

awaitable<bool> redis_client::log_in(clock::time_point deadline) {
  // Before any call: a call sent behind a SELECT that Redis refuses would
  // run in database 0.
  const std::weak_ptr<bool> alive = alive_;
  const auto accepted = [this](std::string_view what, const std::optional<redis_reply>& reply) {
    if (reply && reply->kind != redis_reply::type::error) return true;
    if (reply) refusal_ = std::string(what) + " refused: " + reply->text;
    if (context_) redisAsyncFree(context_);
    return false;
  };
  if (!login_.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!login_.username.empty()) auth.emplace_back(login_.username);
    auth.emplace_back(login_.password);
    const auto reply = co_await exchange(auth, deadline);
    if (alive.expired() || !accepted("AUTH", reply)) co_return false;
  }
  if (login_.database != 0) {
    const std::string number = std::to_string(login_.database);
    const std::vector<std::string_view> select{"SELECT", number};
    const auto reply = co_await exchange(select, deadline);
    if (alive.expired() || !accepted("SELECT", reply)) co_return false;
  }
  co_return true;
}

bool redis_client::start(redisAsyncContext* context) {
  if (context == nullptr) return false;
  // A failure found at once (no such socket file, say) comes back here
  // rather than through the connect callback.
  if (context->err != 0) {
    redisAsyncFree(context);
    return false;
  }
  auto socket = std::make_shared<watcher>(executor_, this, context);
  std::error_code error;
  socket->descriptor.assign(context->c.fd, error);
  if (error) {
    redisAsyncFree(context);
    return false;
  }
  context->data = this;
  context->ev.data = socket.get();
  context->ev.addRead = on_add_read;
  context->ev.delRead = on_del_read;
  context->ev.addWrite = on_add_write;
  context->ev.delWrite = on_del_write;
  context->ev.cleanup = on_cleanup;
  context_ = context;
  watcher_ = std::move(socket);
  ++generation_;
  redisAsyncSetDisconnectCallback(context, on_disconnect);
  // Also asks for writability, which is how hiredis learns the connect finished.
  redisAsyncSetConnectCallback(context, on_connect);
  return true;
}

void redis_client::forget() noexcept {
  context_ = nullptr;
  connected_ = false;
  watcher_.reset();
}

void redis_client::on_connect(const redisAsyncContext* context, int status) {
  // On failure hiredis frees the context next, through the cleanup hook.
  if (auto* self = static_cast<redis_client*>(context->data); self && status == REDIS_OK)
    self->connected_ = true;
}

void redis_client::on_disconnect(const redisAsyncContext* context, int /*status*/) {
  if (auto* self = static_cast<redis_client*>(context->data)) self->connected_ = false;
}

void redis_client::on_reply(redisAsyncContext* /*context*/, void* reply, void* privdata) {
  const std::unique_ptr<std::shared_ptr<pending>> owned(static_cast<std::shared_ptr<pending>*>(privdata));
  pending& state = **owned;
  state.done = true;
  // Nothing may unwind into hiredis's C frames.
  try {
    if (reply != nullptr) state.reply = convert(*static_cast<const redisReply*>(reply));
  } catch (...) {
    state.reply.reset();
  }
  try {
    state.timer.expires_at(clock::time_point::min());
  } catch (...) {
  }
}

void redis_client::on_add_read(void* data) { static_cast<watcher*>(data)->want(false, true); }
void redis_client::on_del_read(void* data) { static_cast<watcher*>(data)->want(false, false); }
void redis_client::on_add_write(void* data) { static_cast<watcher*>(data)->want(true, true); }
void redis_client::on_del_write(void* data) { static_cast<watcher*>(data)->want(true, false); }

void redis_client::on_cleanup(void* data) {
  auto* socket = static_cast<watcher*>(data);
  redisAsyncContext* context = std::exchange(socket->context, nullptr);
  if (context == nullptr) return;
  // No hook may reach this watcher again, whatever hiredis does next.
  context->ev.addRead = context->ev.delRead = context->ev.addWrite = context->ev.delWrite = nullptr;
  context->ev.cleanup = nullptr;
  asio::error_code ignored;
  socket->descriptor.cancel(ignored);
  socket->descriptor.release();
  // Last: the client may hold the only reference to the watcher.
  if (redis_client* owner = std::exchange(socket->owner, nullptr)) owner->forget();
}

}  // namespace smtpguard::net
