#include "session/backend_connection.hpp"

#include <unistd.h>

#include <asio/connect.hpp>

#include "log.hpp"
#include "net/timeout.hpp"

namespace smtpguard::session {
namespace {

// Backend reply lines may be long (multi-line EHLO, long texts); RFC 5321
// 4.5.3.1.5 says 512, real MTAs go beyond it.
constexpr std::size_t max_backend_line = 4096;

}  // namespace

std::string_view to_string(backend_failure failure) noexcept {
  switch (failure) {
    case backend_failure::none:
      return "none";
    case backend_failure::gone:
      return "gone";
    case backend_failure::timeout:
      return "timeout";
    case backend_failure::protocol:
      return "protocol";
  }
  return "unknown";
}

backend_connection::backend_connection(net::tcp::socket socket, const timeouts_config& timeouts)
    : socket_(std::move(socket)), timeouts_(timeouts), io_(socket_, max_backend_line) {}

net::awaitable<std::unique_ptr<backend_connection>> backend_connection::open(const endpoint& address,
                                                                             const std::string& helo_name,
                                                                             const timeouts_config& timeouts,
                                                                             std::string& failed_stage,
                                                                             metrics* stats) {
  auto executor = co_await asio::this_coro::executor;
  failed_stage = "connect";
  net::tcp::socket socket(executor);
  // A literal address needs no lookup (the lookup runs on another thread).
  std::error_code not_literal;
  const auto literal = asio::ip::make_address(address.host, not_literal);
  net::tcp protocol = net::tcp::v4();
  if (!not_literal) {
    const net::tcp::endpoint peer(literal, address.port);
    auto connected = co_await net::with_timeout(socket.async_connect(peer, net::as_result),
                                                timeouts.backend_connect);
    if (!connected || std::get<0>(*connected)) co_return nullptr;
    protocol = peer.protocol();
  } else {
    net::tcp::resolver resolver(executor);
    auto resolved = co_await net::with_timeout(
        resolver.async_resolve(address.host, std::to_string(address.port), net::as_result),
        timeouts.backend_connect);
    if (!resolved || std::get<0>(*resolved)) co_return nullptr;
    auto connected = co_await net::with_timeout(
        asio::async_connect(socket, std::get<1>(*resolved), net::as_result), timeouts.backend_connect);
    if (!connected || std::get<0>(*connected)) co_return nullptr;
    protocol = std::get<1>(*connected).protocol();
  }
  std::error_code error;
  socket.set_option(net::tcp::no_delay(true), error);
  // Waiting for the connect left the descriptor watched for writability too,
  // which would wake the loop after every command we send. Registered
  // afresh, it is watched for input only.
  const auto descriptor = socket.release(error);
  if (error) co_return nullptr;
  socket.assign(protocol, descriptor, error);
  if (error) {
    ::close(descriptor);
    co_return nullptr;
  }

  auto connection = std::make_unique<backend_connection>(std::move(socket), timeouts);
  connection->stats_ = stats;
  failed_stage = "greeting";
  auto greeting = co_await connection->read_reply(timeouts.backend_reply);
  if (!greeting || greeting->code != 220) {
    connection->abort();
    co_return nullptr;
  }
  failed_stage = "ehlo";
  const std::string ehlo_line = "EHLO " + helo_name;
  const std::string helo_line = "HELO " + helo_name;
  auto ehlo = co_await connection->command(ehlo_line);
  if (ehlo && ehlo->code == 250) {
    connection->capabilities_ = smtp::parse_ehlo(*ehlo);
  } else if (ehlo && ehlo->reply_class() == 5) {
    // RFC 5321 3.2: a server without ESMTP; fall back to HELO.
    auto helo = co_await connection->command(helo_line);
    if (!helo || helo->code != 250) ehlo.reset();
  } else {
    ehlo.reset();
  }
  if (!ehlo) {
    connection->abort();
    co_return nullptr;
  }
  failed_stage.clear();
  co_return connection;
}

net::awaitable<std::optional<smtp::reply>> backend_connection::command(std::string_view line) {
  // With replies outstanding, the next one read would not be this command's.
  if (outstanding_ > 0 || out_of_step()) {
    fail(backend_failure::protocol);
    co_return std::nullopt;
  }
  io_.queue(line);
  io_.queue("\r\n");
  const bool sent = co_await io_.flush(timeouts_.backend_reply);
  if (!sent) {
    fail(backend_failure::gone);
    co_return std::nullopt;
  }
  auto answer = co_await read_reply(timeouts_.backend_reply);
  co_return answer;
}

bool backend_connection::queue_command(std::string_view line) {
  // Replies to the group's earlier commands may arrive at any time; only the
  // first command of a group can tell a stray byte from an answer.
  if (outstanding_ == 0 && out_of_step()) {
    fail(backend_failure::protocol);
    return false;
  }
  io_.queue(line);
  io_.queue("\r\n");
  ++outstanding_;
  return true;
}

net::awaitable<bool> backend_connection::write(std::string_view bytes) {
  if (outstanding_ > 0 || out_of_step()) {
    fail(backend_failure::protocol);
    co_return false;
  }
  const bool sent = co_await io_.write(bytes, timeouts_.data_block);
  if (sent) co_return true;
  fail(backend_failure::gone);
  co_return false;
}

net::awaitable<std::optional<smtp::reply>> backend_connection::read_reply(net::duration limit) {
  if (outstanding_ > 0) --outstanding_;
  smtp::reply_parser parser;
  smtp::framed_line line;
  for (;;) {
    const auto status = co_await io_.read_line(line, limit);
    if (status == net::read_status::closed || status == net::read_status::timeout) {
      fail(status == net::read_status::closed ? backend_failure::gone : backend_failure::timeout);
      co_return std::nullopt;
    }
    if (status != net::read_status::line || line.bare_lf || line.has_bare_cr || line.has_nul) break;
    switch (parser.feed(line.text)) {
      case smtp::reply_parser::status::need_more:
        continue;
      case smtp::reply_parser::status::done: {
        smtp::reply answer = parser.take();
        if (stats_ != nullptr) stats_->backend_reply(static_cast<char>('0' + answer.code / 100));
        co_return answer;
      }
      case smtp::reply_parser::status::bad:
        break;
    }
    break;
  }
  fail(backend_failure::protocol);
  co_return std::nullopt;
}

net::awaitable<void> backend_connection::quit() {
  if (!is_open()) co_return;
  co_await command("QUIT");
  abort();
}

bool backend_connection::out_of_step() {
  if (io_.framer().has_buffered()) return true;
  asio::error_code error;
  return socket_.is_open() && socket_.available(error) > 0;
}

void backend_connection::fail(backend_failure why) noexcept {
  failure_ = why;
  abort();
}

void backend_connection::abort() noexcept {
  asio::error_code ignored;
  socket_.shutdown(net::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace smtpguard::session
