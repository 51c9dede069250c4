#include "session/backend_connection.hpp"

#include <poll.h>
#include <unistd.h>

#include <asio/connect.hpp>
#include <asio/local/stream_protocol.hpp>

#include "log.hpp"
#include "net/connect.hpp"
#include "net/timeout.hpp"
#include "smtp/proxy_protocol.hpp"

namespace smtpguard::session {
namespace {

// Backend reply lines may be long (multi-line EHLO, long texts); RFC 5321
// 4.5.3.1.5 says 512, real MTAs go beyond it.
constexpr std::size_t max_backend_line = 4096;

// {client_ip} and friends in a program's argument, replaced per session.
std::string expand(std::string argument, const smtp::client_identity& client) {
  const std::pair<std::string_view, std::string> fields[] = {
      {"{client_ip}", client.ip},          {"{client_port}", std::to_string(client.port)},
      {"{local_ip}", client.local_ip},     {"{local_port}", std::to_string(client.local_port)},
      {"{user}", client.user},
  };
  for (const auto& [name, value] : fields) {
    for (auto at = argument.find(name); at != std::string::npos; at = argument.find(name, at + value.size()))
      argument.replace(at, name.size(), value);
  }
  return argument;
}

std::optional<backend_program> start_program(const backend_server& server, const smtp::client_identity* client,
                                             const std::string& helo_name, net::tcp::socket& out) {
  // The health probe has no client: it looks like a local connection.
  smtp::client_identity probe;
  probe.ip = probe.local_ip = "127.0.0.1";
  const smtp::client_identity& who = client != nullptr ? *client : probe;
  std::vector<std::string> argv;
  for (const auto& argument : server.command) argv.push_back(expand(argument, who));
  // What tcpserver (ucspi-tcp) sets, which qmail-smtpd and others read; the
  // authenticated user is TCPREMOTEINFO, which qmail-smtpd puts in its
  // Received line. Nothing of our own environment is passed on.
  std::vector<std::string> environment = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "PROTO=TCP",
      "TCPREMOTEIP=" + who.ip,
      "TCPREMOTEPORT=" + std::to_string(who.port),
      "TCPLOCALIP=" + who.local_ip,
      "TCPLOCALPORT=" + std::to_string(who.local_port),
      "TCPLOCALHOST=" + helo_name,
  };
  if (!who.user.empty()) environment.push_back("TCPREMOTEINFO=" + who.user);
  for (const auto& [name, value] : server.environment) environment.push_back(name + "=" + value);
  int descriptor = -1;
  std::error_code error;
  auto program = backend_program::start(argv, environment, descriptor, error);
  if (!program) {
    log::event("backend_program_failed").add("program", server.name).add("error", error.message());
    return std::nullopt;
  }
  if (!net::adopt(descriptor, out)) return std::nullopt;
  return program;
}

std::string proxy_header(proxy_protocol version, const smtp::client_identity& client) {
  return version == proxy_protocol::v1
             ? smtp::build_proxy_v1(client.ip, client.port, client.local_ip, client.local_port)
             : smtp::build_proxy_v2(client.ip, client.port, client.local_ip, client.local_port);
}

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

std::string reuse_key(const backend_server& server, const std::string& helo_name) {
  std::string key = server.name;
  key += '\n';
  key += helo_name;
  key += server.xclient ? "\nxclient" : "";
  key += server.proxy != proxy_protocol::none ? "\nproxy" : "";
  return key;
}

backend_connection::backend_connection(net::tcp::socket socket, const timeouts_config& timeouts)
    : socket_(std::move(socket)), timeouts_(timeouts), io_(socket_, max_backend_line) {}

backend_connection::~backend_connection() {
  abort();
  if (program_) {
    try {
      std::move(*program_).reap_later(socket_.get_executor(), program_name_, timeouts_.backend_program_exit);
    } catch (...) {
      // The program is then killed and reaped by its destructor.
    }
  }
}

net::awaitable<std::unique_ptr<backend_connection>> backend_connection::open(const backend_server& server,
                                                                             const smtp::client_identity* client,
                                                                             const std::string& helo_name,
                                                                             const timeouts_config& timeouts,
                                                                             std::string& failed_stage,
                                                                             metrics* stats) {
  failed_stage = "connect";
  net::tcp::socket socket(co_await asio::this_coro::executor);
  std::optional<backend_program> program;
  if (!server.command.empty()) {
    program = start_program(server, client, helo_name, socket);
    if (!program) co_return nullptr;
  } else if (!server.address.unix_path.empty()) {
    const bool connected = co_await net::connect_unix(server.address.unix_path, timeouts.backend_connect, socket);
    if (!connected) co_return nullptr;
  } else {
    const bool connected = co_await net::connect_tcp(server.address, timeouts.backend_connect, socket);
    if (!connected) co_return nullptr;
  }

  // From here, a failure returns null and the connection's destructor drops it.
  auto connection = std::make_unique<backend_connection>(std::move(socket), timeouts);
  connection->stats_ = stats;
  connection->mail_auth_ = server.mail_auth && client != nullptr && !client->user.empty();
  connection->reuse_key_ = session::reuse_key(server, helo_name);
  if (program) {
    connection->program_ = std::move(program);
    connection->program_name_ = server.name;
    connection->identity_ = "environment";
  }
  if (server.proxy != proxy_protocol::none) {
    // Before anything else, as the backend expects it. The health probe has
    // no client: its header gives the probe's own connection, which any
    // receiver takes (Postfix refuses the address-less forms).
    smtp::client_identity own;
    if (client == nullptr && server.address.unix_path.empty()) {
      std::error_code error;
      const auto from = connection->socket_.local_endpoint(error);
      const auto to = connection->socket_.remote_endpoint(error);
      if (!error) {
        own.ip = from.address().to_string();
        own.port = from.port();
        own.local_ip = to.address().to_string();
        own.local_port = to.port();
      }
    }
    const std::string header = proxy_header(server.proxy, client != nullptr ? *client : own);
    const bool sent = co_await connection->io_.write(header, timeouts.backend_reply);
    if (!sent) co_return nullptr;
    connection->identity_ = server.proxy == proxy_protocol::v1 ? "proxy_v1" : "proxy_v2";
  }
  failed_stage = "greeting";
  auto greeting = co_await connection->read_reply(timeouts.backend_reply);
  if (!greeting || greeting->code != 220) co_return nullptr;
  failed_stage = "ehlo";
  const bool greeted = co_await connection->greet(helo_name);
  if (!greeted) co_return nullptr;
  if (server.xclient && client != nullptr) {
    const std::string line = smtp::build_xclient(*client, connection->capabilities_.xclient_attributes);
    if (!line.empty()) {
      // Postfix answers XCLIENT with a new 220 greeting, and the session
      // starts again from EHLO, now as the client.
      failed_stage = "xclient";
      auto answer = co_await connection->command(line);
      if (!answer || answer->code != 220) {
        if (answer) log::event("backend_xclient_refused").add("backend", server.name).add("reply", answer->lines.front());
        co_return nullptr;
      }
      const bool again = co_await connection->greet(helo_name);
      if (!again) co_return nullptr;
      connection->identity_ = "xclient";
    }
  }
  failed_stage.clear();
  co_return connection;
}

net::awaitable<bool> backend_connection::greet(const std::string& helo_name) {
  const std::string ehlo_line = "EHLO " + helo_name;
  const std::string helo_line = "HELO " + helo_name;
  auto ehlo = co_await command(ehlo_line);
  if (ehlo && ehlo->code == 250) {
    capabilities_ = smtp::parse_ehlo(*ehlo);
    co_return true;
  }
  if (ehlo && ehlo->reply_class() == 5) {
    // RFC 5321 3.2: a server without ESMTP; fall back to HELO.
    capabilities_ = smtp::capabilities{};
    auto helo = co_await command(helo_line);
    if (helo && helo->code == 250) co_return true;
  }
  co_return false;
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
  in_content_ = true;
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
        in_content_ = false;
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

bool backend_connection::reusable(std::chrono::steady_clock::duration lifetime) {
  if (!is_open() || failure_ != backend_failure::none || outstanding_ > 0 || in_content_ || program_ ||
      identity_ != "received")
    return false;
  if (std::chrono::steady_clock::now() - opened_ >= lifetime) return false;
  if (io_.framer().has_buffered()) return false;
  // Anything readable, a 421 or the end of the stream, means the backend
  // gave up on the connection while it waited.
  pollfd watched{};
  watched.fd = socket_.native_handle();
  watched.events = POLLIN | POLLRDHUP;
  return ::poll(&watched, 1, 0) == 0;
}

void backend_connection::take_over(const backend_server& server, const smtp::client_identity& client) noexcept {
  mail_auth_ = server.mail_auth && !client.user.empty();
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
