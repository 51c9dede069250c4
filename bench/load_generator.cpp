// smtpguard-bench: an SMTP load generator (in the spirit of h2load).
// Prints one JSON line with the results; exits 1 if any session failed.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/strand.hpp>

#include "client_session.hpp"
#include "crypto_floor.hpp"
#include "options.hpp"
#include "stats.hpp"

namespace smtpguard::bench {
namespace {

using clock_type = std::chrono::steady_clock;

/// Read by every worker; counters are atomic.
struct run_state {
  session_setup setup;
  stats results;
  std::size_t total = 0;  ///< sessions to start (SIZE_MAX: until the deadline)
  std::atomic<std::size_t> next{0};
  clock_type::time_point start;
  std::optional<clock_type::time_point> deadline;
};

constexpr auto late_tolerance = std::chrono::milliseconds(5);

/// One worker runs its sessions one after another (closed loop), or, with
/// --rate, each at its scheduled arrival time start + i / rate.
net::awaitable<void> worker(run_state& state) {
  const options& o = *state.setup.opts;
  resume_slot slot;
  resume_slot* resume = o.resume ? &slot : nullptr;
  for (;;) {
    const std::size_t i = state.next.fetch_add(1);
    if (i >= state.total) break;
    if (state.deadline && clock_type::now() >= *state.deadline) break;
    if (o.rate > 0) {
      const auto at = state.start + std::chrono::duration_cast<clock_type::duration>(
                                        std::chrono::duration<double>(static_cast<double>(i) / o.rate));
      if (state.deadline && at >= *state.deadline) break;
      if (clock_type::now() > at + late_tolerance) {
        state.results.add_late_start();
      } else {
        asio::steady_timer timer(co_await asio::this_coro::executor, at);
        co_await timer.async_wait(net::as_result);
      }
    }
    auto result = co_await run_session(state.setup, resume, std::nullopt);
    state.results.add(result);
  }
}

/// Idle mode: one session held open until the deadline.
net::awaitable<void> idle_session(run_state& state) {
  resume_slot slot;
  auto result = co_await run_session(state.setup, state.setup.opts->resume ? &slot : nullptr, state.deadline);
  state.results.add(result);
}

int run(const options& o) {
  asio::io_context io(static_cast<int>(o.threads));

  std::unique_ptr<asio::ssl::context> tls;
  if (o.mode != tls_mode::plain) {
    tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(tls->native_handle(), TLS1_2_VERSION);
    if (o.insecure) {
      tls->set_verify_mode(asio::ssl::verify_none);
    } else {
      tls->load_verify_file(o.ca_file);
      tls->set_verify_mode(asio::ssl::verify_peer);
    }
    if (o.resume) enable_resumption(*tls);
  }

  run_state state;
  state.setup.opts = &o;
  state.setup.tls = tls.get();
  {
    asio::ip::tcp::resolver resolver(io);
    const auto endpoints = resolver.resolve(o.host, std::to_string(o.port));
    state.setup.endpoint = endpoints.begin()->endpoint();
  }
  state.setup.message_wire = build_message(o, state.setup.message_bytes);
  if (o.sessions) state.total = *o.sessions;
  else state.total = o.duration_s > 0 ? std::numeric_limits<std::size_t>::max() : 100;

  state.start = clock_type::now();
  if (o.duration_s > 0)
    state.deadline = state.start + std::chrono::duration_cast<clock_type::duration>(
                                       std::chrono::duration<double>(o.duration_s));

  auto on_done = [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      std::cerr << "smtpguard-bench: worker stopped: " << ex.what() << "\n";
    }
  };
  if (o.idle > 0) {
    for (std::size_t i = 0; i < o.idle; ++i) asio::co_spawn(asio::make_strand(io), idle_session(state), on_done);
  } else {
    for (std::size_t i = 0; i < o.concurrency; ++i) asio::co_spawn(asio::make_strand(io), worker(state), on_done);
  }

  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < o.threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();

  const double elapsed = std::chrono::duration<double>(clock_type::now() - state.start).count();
  if (const auto details = state.results.failure_details(); !details.empty())
    std::cerr << "smtpguard-bench: first unexpected reply per failure reason:\n" << details;
  std::cout << state.results.to_json(o, elapsed) << std::endl;
  return state.results.failed() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace smtpguard::bench

int main(int argc, char** argv) {
  std::string message;
  int exit_code = 0;
  const auto opts = smtpguard::bench::parse_options(argc, argv, message, exit_code);
  if (!opts) {
    (exit_code == 0 ? std::cout : std::cerr) << message;
    return exit_code;
  }
  try {
    if (opts->crypto_s > 0) {
      std::cout << smtpguard::bench::crypto_floor_json(opts->crypto_s) << std::endl;
      return 0;
    }
    return smtpguard::bench::run(*opts);
  } catch (const std::exception& e) {
    std::cerr << "smtpguard-bench: " << e.what() << "\n";
    return 2;
  }
}
