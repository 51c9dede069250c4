#pragma once
// Caps the TLS handshakes one thread has in progress. Without a cap, a burst
// of thousands of connections has thousands of handshakes under way at once,
// each holding its handshake state until its client answers; the heap grows
// to that peak and keeps the holes it leaves, so the process stays that big
// long after every session went idle. With a cap, handshakes run in arrival
// order, each finishes sooner, and memory follows the sessions, not the burst.
//
// A slot cannot be held hostage: one held longer than `hold` while others
// wait stops counting, so a client that sends its hello and then stalls
// delays the queue by at most `hold`.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>

#include "net/asio_fwd.hpp"

namespace smtpguard::session {

class handshake_slots {
 public:
  using clock = std::chrono::steady_clock;

  class slot {
   public:
    slot() = default;
    slot(slot&& other) noexcept : owner_(other.owner_), id_(other.id_) { other.owner_ = nullptr; }
    slot& operator=(slot&& other) noexcept;
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot() { release(); }

    explicit operator bool() const noexcept { return owner_ != nullptr; }
    /// Gives the slot back (the handshake is over); the next waiter gets it.
    void release() noexcept;

   private:
    friend class handshake_slots;
    slot(handshake_slots* owner, std::uint64_t id) : owner_(owner), id_(id) {}
    handshake_slots* owner_ = nullptr;
    std::uint64_t id_ = 0;
  };

  /// Everything is used on one thread only.
  explicit handshake_slots(clock::duration hold = std::chrono::seconds(1)) : hold_(hold) {}
  handshake_slots(const handshake_slots&) = delete;
  handshake_slots& operator=(const handshake_slots&) = delete;

  /// A slot once fewer than `limit` are held (FIFO among waiters), or an
  /// empty one if `deadline` passes first. `waited` tells whether it queued.
  net::awaitable<slot> acquire(std::size_t limit, clock::time_point deadline, bool& waited);

  /// acquire() would not wait (overstayers aside).
  bool available(std::size_t limit) const noexcept { return waiters_.empty() && holders_.size() < limit; }
  std::size_t held() const noexcept { return holders_.size(); }
  std::size_t waiting() const noexcept { return waiters_.size(); }

 private:
  struct holder {
    std::uint64_t id;
    clock::time_point since;
  };
  struct waiter {  // points into the waiting coroutine's frame
    asio::steady_timer* timer;
    std::uint64_t* granted;  ///< set to the slot handed over
  };

  slot take(clock::time_point now);
  void give_back(std::uint64_t id) noexcept;
  /// Holders past `hold_` stop counting (called when someone needs the room).
  void expire_stale(clock::time_point now) noexcept;
  /// Hands free slots to waiters in arrival order.
  void grant(clock::time_point now) noexcept;

  clock::duration hold_;
  std::size_t limit_ = 1;
  std::uint64_t next_id_ = 1;
  std::deque<holder> holders_;  ///< oldest first
  std::list<waiter> waiters_;   ///< arrival order
};

}  // namespace smtpguard::session
