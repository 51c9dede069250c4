#pragma once
// Every await has a deadline: the operation is raced against a timer and
// cancelled when the timer wins.
#include <chrono>
#include <optional>
#include <utility>

#include "net/asio_fwd.hpp"

namespace smtpguard::net {

using duration = std::chrono::steady_clock::duration;

/// The operation's result, or nullopt when `limit` passed first.
template <typename T>
awaitable<std::optional<T>> with_timeout(awaitable<T> operation, duration limit) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  auto outcome = co_await (std::move(operation) || timer.async_wait(as_result));
  if (outcome.index() == 0) co_return std::move(std::get<0>(outcome));
  co_return std::nullopt;
}

/// For operations without a result: true when completed in time.
inline awaitable<bool> with_timeout(awaitable<void> operation, duration limit) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  auto outcome = co_await (std::move(operation) || timer.async_wait(as_result));
  co_return outcome.index() == 0;
}

}  // namespace smtpguard::net
