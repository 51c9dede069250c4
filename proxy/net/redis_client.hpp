#pragma once
// Redis for the sessions of one I/O thread, through hiredis's asynchronous
// API driven by the thread's Asio reactor: hiredis says when it wants to read
// or write its socket, Asio waits for that, and hiredis does the I/O and the
// parsing. No thread blocks on Redis.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>

#include "config.hpp"
#include "net/asio_fwd.hpp"

struct redisAsyncContext;

namespace smtpguard::net {

/// One reply, as hiredis parsed it.
struct redis_reply {
  enum class type { nil, integer, string, status, error, array };
  type kind = type::nil;
  long long integer = 0;
  std::string text;                ///< string, status and error replies
  std::vector<redis_reply> items;  ///< array replies
};

/// How each new connection logs in before any call goes out on it.
struct redis_login {
  std::string username;  ///< empty: AUTH with the password alone
  std::string password;  ///< empty: no AUTH
  int database = 0;      ///< SELECTed when not 0
};

/// Redis for the sessions of one I/O thread: hiredis's async API driven by
/// the thread's Asio reactor (as dns_resolver drives c-ares). One connection,
/// opened on first use and opened again on the next call after it failed.
/// Everything runs on the executor's thread; destroy it before its io_context.
class redis_client {
 public:
  /// `address`: host:port (a literal IP or a name) or unix:/path (endpoint.unix_path set).
  /// `timeout`: for connecting and logging in, and for each reply.
  redis_client(asio::any_io_executor executor, endpoint address, std::chrono::milliseconds timeout,
               redis_login login = {});
  /// Frees the hiredis context; pending calls complete with nullopt.
  ~redis_client();
  redis_client(const redis_client&) = delete;
  redis_client& operator=(const redis_client&) = delete;

  /// Sends one command (each argument binary-safe, via redisAsyncCommandArgv) and
  /// waits for its reply. nullopt when Redis cannot be reached, the connection
  /// fails, or no reply came within the timeout (then the connection is dropped
  /// and the next call reconnects). An error reply (-ERR ...) is a reply, kind error;
  /// so is Redis refusing the login ("AUTH refused: WRONGPASS ...", "SELECT
  /// refused: ..."), after which the connection is dropped and no call was sent.
  /// Commands that answer more or less than once (SUBSCRIBE and the like,
  /// MONITOR, CLIENT REPLY) are refused with nullopt.
  awaitable<std::optional<redis_reply>> call(std::vector<std::string> arguments);

  /// True while the connection is up (for logs/metrics).
  bool connected() const noexcept;

 private:
  using clock = std::chrono::steady_clock;
  struct watcher;
  struct pending;
  struct opening;

  awaitable<bool> open(clock::time_point deadline);
  awaitable<bool> connect(clock::time_point deadline);
  awaitable<bool> log_in(clock::time_point deadline);
  bool start(redisAsyncContext* context);
  /// Sends one command on the open connection and waits for its reply.
  awaitable<std::optional<redis_reply>> exchange(const std::vector<std::string_view>& arguments,
                                                 clock::time_point deadline);
  void forget() noexcept;

  static void on_connect(const redisAsyncContext* context, int status);
  static void on_disconnect(const redisAsyncContext* context, int status);
  static void on_reply(redisAsyncContext* context, void* reply, void* privdata);
  static void on_add_read(void* data);
  static void on_del_read(void* data);
  static void on_add_write(void* data);
  static void on_del_write(void* data);
  static void on_cleanup(void* data);

  asio::any_io_executor executor_;
  endpoint address_;
  std::chrono::milliseconds timeout_;
  redis_login login_;
  std::string refusal_;  ///< why Redis refused the last login; empty when it did not
  redisAsyncContext* context_ = nullptr;  ///< null while there is no connection
  std::shared_ptr<watcher> watcher_;      ///< the socket of context_
  std::shared_ptr<opening> opening_;      ///< set while a call connects and logs in
  std::uint64_t generation_ = 0;          ///< counts contexts, so a timeout drops only its own
  bool connected_ = false;
  /// Coroutines that outlive the client see it expire and stop touching it.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace smtpguard::net
