// The Redis client against a real redis-server on loopback: replies of every
// kind, binary-safe arguments, many calls at once on one connection,
// timeouts against nothing and against a peer that never answers,
// reconnection after the server comes back, and destruction mid-call.
#include "net/redis_client.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/timeout.hpp"

extern char** environ;

namespace {

using asio::ip::tcp;
using smtpguard::endpoint;
using smtpguard::net::as_result;
using smtpguard::net::redis_client;
using smtpguard::net::redis_reply;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using reply_kind = redis_reply::type;
using command = std::vector<std::string>;
using replies = std::vector<std::optional<redis_reply>>;

constexpr const char* redis_server = "/usr/bin/redis-server";

std::uint16_t free_port() {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  return acceptor.local_endpoint().port();
}

endpoint tcp_address(const std::string& host, std::uint16_t port) {
  endpoint address;
  address.host = host;
  address.port = port;
  address.text = host + ":" + std::to_string(port);
  return address;
}

endpoint unix_address(const std::string& path) {
  endpoint address;
  address.unix_path = path;
  address.text = "unix:" + path;
  return address;
}

bool accepts(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_port = htons(port);
  peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof peer) == 0;
  ::close(fd);
  return connected;
}

// A private redis-server, started and killed by PID.
class redis_process {
 public:
  redis_process(std::uint16_t port, std::string socket_path)
      : port_(port), socket_path_(std::move(socket_path)) {}
  ~redis_process() { stop(); }
  redis_process(const redis_process&) = delete;
  redis_process& operator=(const redis_process&) = delete;

  bool start() {
    const std::string directory = std::filesystem::path(socket_path_).parent_path();
    // Nothing saved; loopback and a private socket only.
    std::vector<std::string> arguments{redis_server, "--save",           "",   "--appendonly",
                                       "no",         "--daemonize",      "no", "--bind",
                                       "127.0.0.1",  "--unixsocketperm", "700"};
    arguments.insert(arguments.end(),
                     {"--port", std::to_string(port_), "--dir", directory, "--unixsocket", socket_path_});
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    const int spawned = ::posix_spawn(&pid_, redis_server, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
      pid_ = -1;
      return false;
    }
    const auto give_up = clock_type::now() + 10s;
    while (clock_type::now() < give_up) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (accepts(port_)) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::uint16_t port_;
  std::string socket_path_;
  pid_t pid_ = -1;
};

// Reads whatever arrives and never answers.
asio::awaitable<void> swallow(tcp::socket socket) {
  std::array<char, 4096> space;
  const auto buffer = asio::buffer(space);
  for (;;) {
    auto [error, size] = co_await socket.async_read_some(buffer, as_result);
    if (error) co_return;
  }
}

asio::awaitable<void> silent_server(tcp::acceptor& acceptor, int& accepted) {
  for (;;) {
    auto [error, socket] = co_await acceptor.async_accept(as_result);
    if (error) co_return;
    ++accepted;
    asio::co_spawn(acceptor.get_executor(), swallow(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> call_each(redis_client& client, std::vector<command> commands, replies& out) {
  for (auto& arguments : commands) {
    auto reply = co_await client.call(std::move(arguments));
    out.push_back(std::move(reply));
  }
}

struct outcome {
  bool started = false;
  bool finished = false;
  std::optional<redis_reply> reply;
};

asio::awaitable<void> call_once(redis_client& client, command arguments, outcome& out) {
  out.started = true;
  out.reply = co_await client.call(std::move(arguments));
  out.finished = true;
}

asio::awaitable<void> pause(clock_type::duration length) {
  asio::steady_timer timer(co_await asio::this_coro::executor, length);
  co_await timer.async_wait(as_result);
}

// The call inside a race it loses: cancelled from outside.
asio::awaitable<void> call_cut_short(redis_client& client, command arguments, std::chrono::milliseconds limit,
                                     bool& cut) {
  auto operation = client.call(std::move(arguments));
  const auto result = co_await smtpguard::net::with_timeout(std::move(operation), limit);
  cut = !result.has_value();
}

// Echoes `count` distinct words, one at a time, counting the replies that match.
asio::awaitable<void> echo_many(redis_client& client, std::string name, int count, int& matched) {
  for (int i = 0; i < count; ++i) {
    const std::string word = name + "-" + std::to_string(i);
    command arguments{"ECHO", word};
    auto reply = co_await client.call(std::move(arguments));
    if (reply && reply->kind == reply_kind::string && reply->text == word) ++matched;
  }
}

struct core_redis_client : ::testing::Test {
  void SetUp() override {
    if (::access(redis_server, X_OK) != 0) GTEST_SKIP() << redis_server << " is not installed";
    // As the server does: hiredis writes with write(2), so a vanished
    // Redis would otherwise kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    char pattern[] = "/tmp/smtpguard-redis-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    directory = pattern;
    socket_path = directory + "/redis.sock";
    port = free_port();
    server = std::make_unique<redis_process>(port, socket_path);
    ASSERT_TRUE(server->start()) << "redis-server did not start on port " << port;
  }

  void TearDown() override {
    server.reset();
    if (!directory.empty()) std::filesystem::remove_all(directory);
  }

  // Runs every body on `io` until all have finished or `limit` passed; true when all finished.
  bool run_all(std::vector<asio::awaitable<void>> bodies, clock_type::duration limit = 20s) {
    std::size_t left = bodies.size();
    for (auto& body : bodies) {
      asio::co_spawn(io, std::move(body), [this, &left](std::exception_ptr error) {
        if (--left == 0) io.stop();
        if (error) std::rethrow_exception(error);
      });
    }
    io.restart();
    io.run_for(limit);
    return left == 0;
  }

  bool run(asio::awaitable<void> body, clock_type::duration limit = 20s) {
    std::vector<asio::awaitable<void>> bodies;
    bodies.push_back(std::move(body));
    return run_all(std::move(bodies), limit);
  }

  replies calls(redis_client& client, std::vector<command> commands) {
    replies out;
    EXPECT_TRUE(run(call_each(client, std::move(commands), out)));
    return out;
  }

  std::optional<redis_reply> call(redis_client& client, command arguments) {
    auto out = calls(client, {std::move(arguments)});
    return out.empty() ? std::nullopt : std::move(out.front());
  }

  // The connections redis-server has open, ours included.
  std::size_t clients_connected(redis_client& client) {
    const auto list = call(client, {"CLIENT", "LIST"});
    if (!list || list->kind != reply_kind::string) return 0;
    std::size_t lines = 0;
    for (char c : list->text) lines += c == '\n';
    return lines;
  }

  asio::io_context io;
  std::string directory;
  std::string socket_path;
  std::uint16_t port = 0;
  std::unique_ptr<redis_process> server;
};

::testing::AssertionResult is(const std::optional<redis_reply>& reply, reply_kind kind,
                              const std::string& text = {}) {
  if (!reply) return ::testing::AssertionFailure() << "no reply";
  if (reply->kind != kind)
    return ::testing::AssertionFailure()
           << "kind " << static_cast<int>(reply->kind) << " (" << reply->text << ")";
  if (reply->text != text) return ::testing::AssertionFailure() << "text \"" << reply->text << "\"";
  return ::testing::AssertionSuccess();
}

TEST_F(core_redis_client, set_and_get) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  EXPECT_FALSE(client.connected());
  const auto out = calls(client, {{"SET", "greeting", "hello"}, {"GET", "greeting"}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(is(out[0], reply_kind::status, "OK"));
  EXPECT_TRUE(is(out[1], reply_kind::string, "hello"));
  EXPECT_TRUE(client.connected());
}

TEST_F(core_redis_client, arguments_and_values_are_binary_safe) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  const std::string key("key with \0 and \r\n", 17);
  const std::string value("a\0b\r\nc\r\n\0", 9);
  const auto out =
      calls(client, {{"SET", key, value}, {"GET", key}, {"STRLEN", key}, {"EXISTS", "key with "}});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_TRUE(is(out[0], reply_kind::status, "OK"));
  EXPECT_TRUE(is(out[1], reply_kind::string, value));
  ASSERT_TRUE(is(out[2], reply_kind::integer));
  EXPECT_EQ(out[2]->integer, 9);
  ASSERT_TRUE(is(out[3], reply_kind::integer));
  EXPECT_EQ(out[3]->integer, 0);
}

TEST_F(core_redis_client, integer_nil_and_array_replies) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  const auto out = calls(client, {{"INCR", "counter"},
                                  {"INCRBY", "counter", "41"},
                                  {"GET", "missing"},
                                  {"MSET", "a", "1", "b", ""},
                                  {"MGET", "a", "missing", "b"},
                                  {"LRANGE", "missing", "0", "-1"}});
  ASSERT_EQ(out.size(), 6u);
  ASSERT_TRUE(is(out[0], reply_kind::integer));
  EXPECT_EQ(out[0]->integer, 1);
  ASSERT_TRUE(is(out[1], reply_kind::integer));
  EXPECT_EQ(out[1]->integer, 42);
  EXPECT_TRUE(is(out[2], reply_kind::nil));
  EXPECT_TRUE(is(out[3], reply_kind::status, "OK"));
  ASSERT_TRUE(is(out[4], reply_kind::array));
  ASSERT_EQ(out[4]->items.size(), 3u);
  EXPECT_EQ(out[4]->items[0].kind, reply_kind::string);
  EXPECT_EQ(out[4]->items[0].text, "1");
  EXPECT_EQ(out[4]->items[1].kind, reply_kind::nil);
  EXPECT_EQ(out[4]->items[2].kind, reply_kind::string);
  EXPECT_EQ(out[4]->items[2].text, "");
  ASSERT_TRUE(is(out[5], reply_kind::array));
  EXPECT_TRUE(out[5]->items.empty());
}

TEST_F(core_redis_client, an_error_reply_is_a_reply_and_the_connection_stays) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  const auto out = calls(client, {{"SET", "text", "x"}, {"LPUSH", "text", "y"}, {"NOSUCHCOMMAND"}, {"PING"}});
  ASSERT_EQ(out.size(), 4u);
  ASSERT_TRUE(out[1]);
  EXPECT_EQ(out[1]->kind, reply_kind::error);
  EXPECT_EQ(out[1]->text.rfind("WRONGTYPE", 0), 0u) << out[1]->text;
  ASSERT_TRUE(out[2]);
  EXPECT_EQ(out[2]->kind, reply_kind::error);
  EXPECT_EQ(out[2]->text.rfind("ERR", 0), 0u) << out[2]->text;
  EXPECT_TRUE(is(out[3], reply_kind::status, "PONG"));
  EXPECT_EQ(clients_connected(client), 1u);
}

TEST_F(core_redis_client, commands_without_one_reply_each_are_refused) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  const auto out = calls(client, {{"subscribe", "news"}, {"MONITOR"}, {"client", "REPLY", "OFF"}, {"PING"}});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_FALSE(out[0]);
  EXPECT_FALSE(out[1]);
  EXPECT_FALSE(out[2]);
  EXPECT_TRUE(is(out[3], reply_kind::status, "PONG"));
  EXPECT_FALSE(call(client, {}));
}

TEST_F(core_redis_client, concurrent_calls_get_their_own_replies_on_one_connection) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 5s);
  // All start before the connection is up: they queue on the one being opened.
  constexpr int coroutines = 20;
  constexpr int each = 100;
  std::vector<int> matched(coroutines, 0);
  std::vector<asio::awaitable<void>> bodies;
  for (int i = 0; i < coroutines; ++i)
    bodies.push_back(echo_many(client, "c" + std::to_string(i), each, matched[i]));
  ASSERT_TRUE(run_all(std::move(bodies)));
  for (int i = 0; i < coroutines; ++i) EXPECT_EQ(matched[i], each) << "coroutine " << i;
  EXPECT_EQ(clients_connected(client), 1u);
}

TEST_F(core_redis_client, a_host_name_is_looked_up_once_for_all_waiting_calls) {
  redis_client client(io.get_executor(), tcp_address("localhost", port), 5s);
  constexpr int coroutines = 10;
  std::vector<int> matched(coroutines, 0);
  std::vector<asio::awaitable<void>> bodies;
  for (int i = 0; i < coroutines; ++i)
    bodies.push_back(echo_many(client, "n" + std::to_string(i), 3, matched[i]));
  ASSERT_TRUE(run_all(std::move(bodies)));
  for (int i = 0; i < coroutines; ++i) EXPECT_EQ(matched[i], 3) << "coroutine " << i;
  EXPECT_EQ(clients_connected(client), 1u);
}

TEST_F(core_redis_client, a_unix_socket) {
  redis_client client(io.get_executor(), unix_address(socket_path), 2s);
  EXPECT_TRUE(is(call(client, {"PING"}), reply_kind::status, "PONG"));
  redis_client nowhere(io.get_executor(), unix_address(directory + "/nothing.sock"), 2s);
  const auto began = clock_type::now();
  EXPECT_FALSE(call(nowhere, {"PING"}));
  EXPECT_LT(clock_type::now() - began, 1s);
}

TEST_F(core_redis_client, nothing_listening_fails_within_the_timeout) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", free_port()), 500ms);
  const auto began = clock_type::now();
  const auto out = calls(client, {{"PING"}, {"PING"}});
  EXPECT_LT(clock_type::now() - began, 2s);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[0]);
  EXPECT_FALSE(out[1]);
  EXPECT_FALSE(client.connected());
}

TEST_F(core_redis_client, a_peer_that_never_answers_times_out_and_is_left) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  int accepted = 0;
  asio::co_spawn(io, silent_server(acceptor, accepted), asio::detached);
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", acceptor.local_endpoint().port()), 300ms);

  outcome first, second;
  std::vector<asio::awaitable<void>> bodies;
  bodies.push_back(call_once(client, {"GET", "a"}, first));
  bodies.push_back(call_once(client, {"GET", "b"}, second));
  const auto began = clock_type::now();
  ASSERT_TRUE(run_all(std::move(bodies)));
  const auto took = clock_type::now() - began;
  EXPECT_FALSE(first.reply);
  EXPECT_FALSE(second.reply);
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(accepted, 1);
  EXPECT_FALSE(client.connected());

  // The next call opens a new connection, and times out in its turn.
  EXPECT_FALSE(call(client, {"PING"}));
  EXPECT_EQ(accepted, 2);
}

TEST_F(core_redis_client, a_slow_reply_times_out_and_the_next_call_reconnects) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 300ms);
  EXPECT_TRUE(is(call(client, {"PING"}), reply_kind::status, "PONG"));
  // BLPOP answers after 2 s, long after the call gave up; the PING behind it
  // fails with it, as the connection is dropped.
  outcome blocked, behind;
  std::vector<asio::awaitable<void>> bodies;
  bodies.push_back(call_once(client, {"BLPOP", "empty", "2"}, blocked));
  bodies.push_back(call_once(client, {"PING"}, behind));
  ASSERT_TRUE(run_all(std::move(bodies)));
  EXPECT_FALSE(blocked.reply);
  EXPECT_FALSE(behind.reply);
  const auto out = calls(client, {{"SET", "after", "1"}, {"GET", "after"}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(is(out[1], reply_kind::string, "1"));
  // Stay past the BLPOP's answer time: the old connection is gone, nothing arrives for it.
  ASSERT_TRUE(run(pause(2200ms)));
  EXPECT_TRUE(is(call(client, {"GET", "after"}), reply_kind::string, "1"));
  EXPECT_EQ(clients_connected(client), 1u);
}

TEST_F(core_redis_client, a_call_cancelled_by_its_caller_leaves_the_connection_up) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 3s);
  EXPECT_TRUE(is(call(client, {"PING"}), reply_kind::status, "PONG"));
  bool cut = false;
  ASSERT_TRUE(run(call_cut_short(client, {"BLPOP", "empty", "1"}, 100ms, cut)));
  EXPECT_TRUE(cut);
  EXPECT_TRUE(client.connected());
  // The BLPOP's late answer goes to nobody; the replies after it are in step.
  const auto out = calls(client, {{"ECHO", "one"}, {"ECHO", "two"}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(is(out[0], reply_kind::string, "one"));
  EXPECT_TRUE(is(out[1], reply_kind::string, "two"));
  EXPECT_EQ(clients_connected(client), 1u);
}

TEST_F(core_redis_client, reconnects_after_the_server_comes_back) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 1s);
  EXPECT_TRUE(is(call(client, {"SET", "k", "v"}), reply_kind::status, "OK"));
  EXPECT_TRUE(client.connected());
  server->stop();
  const auto began = clock_type::now();
  EXPECT_FALSE(call(client, {"PING"}));
  EXPECT_FALSE(call(client, {"PING"}));
  EXPECT_LT(clock_type::now() - began, 3s);
  EXPECT_FALSE(client.connected());

  ASSERT_TRUE(server->start());
  auto again = call(client, {"PING"});
  if (!again) again = call(client, {"PING"});
  EXPECT_TRUE(is(again, reply_kind::status, "PONG"));
  EXPECT_TRUE(client.connected());
  // A fresh server: nothing was saved.
  EXPECT_TRUE(is(call(client, {"GET", "k"}), reply_kind::nil));
}

TEST_F(core_redis_client, destroyed_while_a_call_waits) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  int accepted = 0;
  asio::co_spawn(io, silent_server(acceptor, accepted), asio::detached);
  const auto silent_port = acceptor.local_endpoint().port();

  for (const std::string host : {"127.0.0.1", "localhost"}) {
    auto client = std::make_unique<redis_client>(io.get_executor(), tcp_address(host, silent_port), 5s);
    outcome out;
    asio::co_spawn(io, call_once(*client, {"GET", "x"}, out), asio::detached);
    io.restart();
    io.run_for(200ms);
    ASSERT_TRUE(out.started) << host;
    EXPECT_FALSE(out.finished) << host;
    client.reset();
    const auto began = clock_type::now();
    while (!out.finished && clock_type::now() - began < 2s) io.run_for(10ms);
    ASSERT_TRUE(out.finished) << host;
    EXPECT_FALSE(out.reply) << host;
    EXPECT_LT(clock_type::now() - began, 1s) << host;
  }

  // Destroyed early: mid-lookup, or before the connect finished.
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    for (int polls = 0; polls < 4; ++polls) {
      auto client = std::make_unique<redis_client>(io.get_executor(), tcp_address(host, silent_port), 5s);
      outcome out;
      asio::co_spawn(io, call_once(*client, {"GET", "x"}, out), asio::detached);
      io.restart();
      while (!out.started) io.run_one();
      for (int i = 0; i < polls; ++i) io.poll_one();
      client.reset();
      const auto began = clock_type::now();
      while (!out.finished && clock_type::now() - began < 2s) io.run_for(10ms);
      ASSERT_TRUE(out.finished) << host << " after " << polls << " polls";
      EXPECT_FALSE(out.reply);
    }
  }
}

// Logging in: AUTH (password alone, or an ACL user) and SELECT go out ahead
// of every call on each new connection, and a refusal answers the calls.

bool starts_with(const std::optional<redis_reply>& reply, const std::string& prefix) {
  return reply && reply->kind == reply_kind::error && reply->text.rfind(prefix, 0) == 0;
}

TEST_F(core_redis_client, logs_in_with_a_password_and_works_in_its_database) {
  redis_client admin(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  // The admin connection, already open, stays logged in as the default user.
  ASSERT_TRUE(is(call(admin, {"CONFIG", "SET", "requirepass", "s3cret pass"}), reply_kind::status, "OK"));

  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s,
                      smtpguard::net::redis_login{"", "s3cret pass", 3});
  const auto out = calls(client, {{"SET", "where", "three"}, {"GET", "where"}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(is(out[0], reply_kind::status, "OK"));
  EXPECT_TRUE(is(out[1], reply_kind::string, "three"));

  const auto seen = calls(admin, {{"GET", "where"}, {"SELECT", "3"}, {"GET", "where"}});
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(is(seen[0], reply_kind::nil));
  EXPECT_TRUE(is(seen[2], reply_kind::string, "three"));

  // Without the password, Redis itself says no.
  redis_client anonymous(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  EXPECT_TRUE(starts_with(call(anonymous, {"PING"}), "NOAUTH")) << call(anonymous, {"PING"})->text;
}

TEST_F(core_redis_client, logs_in_as_an_acl_user_over_a_unix_socket) {
  redis_client admin(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  ASSERT_TRUE(is(call(admin, {"ACL", "SETUSER", "guard", "on", ">guard-pw", "~smtpguard:*", "+@all"}),
                 reply_kind::status, "OK"));
  redis_client client(io.get_executor(), unix_address(socket_path), 2s,
                      smtpguard::net::redis_login{"guard", "guard-pw", 0});
  const auto out = calls(client, {{"SET", "smtpguard:x", "1"}, {"SET", "elsewhere", "1"}, {"ACL", "WHOAMI"}});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(is(out[0], reply_kind::status, "OK"));
  EXPECT_TRUE(starts_with(out[1], "NOPERM")) << (out[1] ? out[1]->text : "no reply");
  EXPECT_TRUE(is(out[2], reply_kind::string, "guard"));
  EXPECT_EQ(clients_connected(admin), 2u);
}

TEST_F(core_redis_client, a_refused_password_answers_every_call_and_drops_the_connection) {
  redis_client admin(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  ASSERT_TRUE(is(call(admin, {"CONFIG", "SET", "requirepass", "right"}), reply_kind::status, "OK"));
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s,
                      smtpguard::net::redis_login{"", "wrong", 0});
  // Calls made before the connection is up, all queued behind the AUTH.
  constexpr int coroutines = 5;
  std::vector<outcome> outs(coroutines);
  std::vector<asio::awaitable<void>> bodies;
  for (auto& out : outs) bodies.push_back(call_once(client, {"SET", "k", "v"}, out));
  ASSERT_TRUE(run_all(std::move(bodies)));
  for (const auto& out : outs)
    EXPECT_TRUE(starts_with(out.reply, "AUTH refused: WRONGPASS")) << (out.reply ? out.reply->text : "no reply");
  EXPECT_FALSE(client.connected());
  // The next call tries again, on a new connection; nothing was written.
  EXPECT_TRUE(starts_with(call(client, {"GET", "k"}), "AUTH refused: WRONGPASS"));
  EXPECT_TRUE(is(call(admin, {"EXISTS", "k"}), reply_kind::integer));
  EXPECT_EQ(call(admin, {"EXISTS", "k"})->integer, 0);
}

TEST_F(core_redis_client, a_database_redis_does_not_have_is_refused) {
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", port), 2s,
                      smtpguard::net::redis_login{"", "", 999});
  const auto reply = call(client, {"SET", "k", "v"});
  EXPECT_TRUE(starts_with(reply, "SELECT refused: ERR")) << (reply ? reply->text : "no reply");
  redis_client admin(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  EXPECT_EQ(call(admin, {"EXISTS", "k"})->integer, 0);
}

TEST_F(core_redis_client, calls_made_while_logging_in_wait_for_the_login) {
  redis_client admin(io.get_executor(), tcp_address("127.0.0.1", port), 2s);
  ASSERT_TRUE(is(call(admin, {"CONFIG", "SET", "requirepass", "pw"}), reply_kind::status, "OK"));
  redis_client client(io.get_executor(), tcp_address("localhost", port), 5s,
                      smtpguard::net::redis_login{"", "pw", 2});
  constexpr int coroutines = 10;
  std::vector<int> matched(coroutines, 0);
  std::vector<asio::awaitable<void>> bodies;
  for (int i = 0; i < coroutines; ++i)
    bodies.push_back(echo_many(client, "w" + std::to_string(i), 3, matched[i]));
  ASSERT_TRUE(run_all(std::move(bodies)));
  for (int i = 0; i < coroutines; ++i) EXPECT_EQ(matched[i], 3) << "coroutine " << i;
  EXPECT_EQ(clients_connected(admin), 2u);
}

TEST_F(core_redis_client, a_login_never_answered_times_out) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  int accepted = 0;
  asio::co_spawn(io, silent_server(acceptor, accepted), asio::detached);
  redis_client client(io.get_executor(), tcp_address("127.0.0.1", acceptor.local_endpoint().port()), 300ms,
                      smtpguard::net::redis_login{"", "pw", 1});
  const auto began = clock_type::now();
  EXPECT_FALSE(call(client, {"PING"}));
  EXPECT_LT(clock_type::now() - began, 1s);
  EXPECT_EQ(accepted, 1);
  EXPECT_FALSE(client.connected());
}

}  // namespace
