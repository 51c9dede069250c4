#pragma once
// The Asio pieces every coroutine here uses, in one place.
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace smtpguard::net {

using asio::awaitable;
using asio::ip::tcp;
/// Completion token for the expected outcomes (EOF, resets, cancellation):
/// errors come back as values, never as exceptions.
inline constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);

}  // namespace smtpguard::net

// Coroutine rules for this code base, because GCC 12 miscompiles the
// alternatives (double frees, corrupted frames):
//  - co_await only as a whole statement: `co_await f();`, `auto x = co_await f();`
//    or `x = co_await f();` — never inside an if/while condition, an
//    operator expression or `co_return co_await`;
//  - never build a lambda with captures inside a co_await expression;
//  - never pass a class temporary (a braced initializer, say) to the call
//    being awaited: name it first and pass that.
