#include "net/dns_resolver.hpp"

#include <ares.h>
#include <arpa/nameser.h>
#include <netinet/in.h>

#include <mutex>
#include <stdexcept>

namespace smtpguard::net {
namespace {

void initialise_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
      throw std::runtime_error("c-ares: cannot initialise");
  });
}

void on_answer(void* arg, int status, int /*timeouts*/, unsigned char* answer, int length) {
  std::unique_ptr<dns_resolver::a_handler> done(static_cast<dns_resolver::a_handler*>(arg));
  std::vector<dns_resolver::ipv4> addresses;
  // ENOTFOUND is NXDOMAIN; ENODATA a name without A records: both answers.
  if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    (*done)(true, std::move(addresses));
    return;
  }
  if (status != ARES_SUCCESS) {
    (*done)(false, std::move(addresses));
    return;
  }
  ares_addrttl records[16];
  int count = 16;
  const int parsed = ares_parse_a_reply(answer, length, nullptr, records, &count);
  if (parsed != ARES_SUCCESS && parsed != ARES_ENODATA) {
    (*done)(false, std::move(addresses));
    return;
  }
  for (int i = 0; parsed == ARES_SUCCESS && i < count; ++i) {
    dns_resolver::ipv4 address{};
    const std::uint32_t host = ntohl(records[i].ipaddr.s_addr);
    for (int b = 0; b < 4; ++b) address[b] = static_cast<std::uint8_t>(host >> (24 - 8 * b));
    addresses.push_back(address);
  }
  (*done)(true, std::move(addresses));
}

}  // namespace

struct dns_resolver::watched {
  explicit watched(const asio::any_io_executor& executor, int fd) : descriptor(executor, fd) {}
  // c-ares owns the socket and closes it itself: Asio must only let go.
  ~watched() {
    asio::error_code ignored;
    descriptor.cancel(ignored);
    descriptor.release();
  }
  asio::posix::stream_descriptor descriptor;
  bool readable = false;
  bool writable = false;
  bool reading = false;  ///< a read wait is under way
  bool writing = false;
};

dns_resolver::dns_resolver(asio::any_io_executor executor, const std::vector<std::string>& servers,
                           std::chrono::milliseconds timeout)
    : executor_(std::move(executor)), timer_(executor_) {
  initialise_library();
  ares_options options{};
  options.sock_state_cb = [](void* data, ares_socket_t fd, int readable, int writable) {
    on_socket_state(data, fd, readable, writable);
  };
  options.sock_state_cb_data = this;
  options.timeout = static_cast<int>(timeout.count());
  options.tries = 2;
  options.ndots = 0;
  ares_channel channel = nullptr;
  const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS;
  if (const int status = ares_init_options(&channel, &options, mask); status != ARES_SUCCESS)
    throw std::runtime_error(std::string("c-ares: ") + ares_strerror(status));
  channel_ = channel;
  if (!servers.empty()) {
    std::string csv;
    for (const auto& server : servers) csv += (csv.empty() ? "" : ",") + server;
    if (const int status = ares_set_servers_ports_csv(channel_, csv.c_str()); status != ARES_SUCCESS) {
      ares_destroy(channel_);
      throw std::runtime_error("c-ares: bad DNS servers \"" + csv + "\": " + ares_strerror(status));
    }
  }
}

dns_resolver::~dns_resolver() {
  timer_.cancel();
  // Pending lookups are answered (ARES_EDESTRUCTION: a failure) and their
  // sockets reported closed, which drops our watches.
  ares_destroy(channel_);
  sockets_.clear();
}

void dns_resolver::lookup_a(const std::string& name, a_handler done) {
  auto* arg = new a_handler(std::move(done));
  ares_query(channel_, name.c_str(), ns_c_in, ns_t_a, on_answer, arg);
  arm_timer();
}

void dns_resolver::on_socket_state(void* data, int fd, int readable, int writable) {
  static_cast<dns_resolver*>(data)->watch(fd, readable != 0, writable != 0);
}

void dns_resolver::watch(int fd, bool readable, bool writable) {
  if (!readable && !writable) {
    sockets_.erase(fd);
    return;
  }
  auto& slot = sockets_[fd];
  if (!slot) slot = std::make_unique<watched>(executor_, fd);
  slot->readable = readable;
  slot->writable = writable;
  if (readable && !slot->reading) wait_on(fd, false);
  if (writable && !slot->writing) wait_on(fd, true);
}

void dns_resolver::wait_on(int fd, bool for_write) {
  auto& socket = *sockets_.at(fd);
  (for_write ? socket.writing : socket.reading) = true;
  using descriptor = asio::posix::stream_descriptor;
  const auto kind = for_write ? descriptor::wait_write : descriptor::wait_read;
  socket.descriptor.async_wait(kind, [this, fd, for_write, which = &socket](const asio::error_code& error) {
    // Cancelled: the watch is gone (and `which` with it), or the resolver is.
    if (error) return;
    const auto it = sockets_.find(fd);
    if (it == sockets_.end() || it->second.get() != which) return;
    (for_write ? which->writing : which->reading) = false;
    ares_process_fd(channel_, for_write ? ARES_SOCKET_BAD : fd, for_write ? fd : ARES_SOCKET_BAD);
    // c-ares may have closed the socket, or stopped wanting this event.
    const auto again = sockets_.find(fd);
    if (again != sockets_.end() && again->second.get() == which) {
      if (!for_write && which->readable && !which->reading) wait_on(fd, false);
      if (for_write && which->writable && !which->writing) wait_on(fd, true);
    }
    arm_timer();
  });
}

void dns_resolver::arm_timer() {
  timeval wait{};
  if (ares_timeout(channel_, nullptr, &wait) == nullptr) {
    timer_.cancel();
    return;
  }
  timer_.expires_after(std::chrono::seconds(wait.tv_sec) + std::chrono::microseconds(wait.tv_usec));
  timer_.async_wait([this](const asio::error_code& error) {
    if (error) return;
    ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer();
  });
}

}  // namespace smtpguard::net
