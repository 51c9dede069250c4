#include "net/deadline.hpp"

namespace smtpguard::net {

using clock = std::chrono::steady_clock;

struct deadline::watch : std::enable_shared_from_this<deadline::watch> {
  explicit watch(tcp::socket& s) : socket(&s), timer(s.get_executor()) {}

  tcp::socket* socket;  // null once the owner is gone
  asio::steady_timer timer;
  clock::time_point expiry{};
  bool armed = false;
  bool expired = false;
  bool waiting = false;
  unsigned wait_id = 0;  // callbacks of superseded waits are ignored

  // The timer is only moved earlier; a later deadline is picked up when the
  // current wait ends, so the common case (each I/O pushing the deadline a
  // little further) never touches the timer queue.
  void start() {
    waiting = true;
    const unsigned id = ++wait_id;
    timer.async_wait([self = shared_from_this(), id](const std::error_code&) { self->fired(id); });
  }

  void fired(unsigned id) {
    if (id != wait_id) return;
    waiting = false;
    if (!armed || socket == nullptr) return;
    if (clock::now() < expiry) {
      timer.expires_at(expiry);
      start();
      return;
    }
    expired = true;
    armed = false;
    std::error_code ignored;
    socket->cancel(ignored);
  }
};

deadline::deadline(tcp::socket& socket) : watch_(std::make_shared<watch>(socket)) {}

deadline::~deadline() {
  watch_->socket = nullptr;
  watch_->armed = false;
  if (watch_->waiting) watch_->timer.cancel();
}

void deadline::arm(duration limit) {
  watch& w = *watch_;
  w.expiry = clock::now() + limit;
  w.armed = true;
  w.expired = false;
  if (!w.waiting || w.expiry < w.timer.expiry()) {
    w.timer.expires_at(w.expiry);
    w.start();
  }
}

void deadline::disarm() noexcept { watch_->armed = false; }

bool deadline::expired() const noexcept { return watch_->expired; }

}  // namespace smtpguard::net
