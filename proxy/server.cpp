#include "server.hpp"

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <mutex>
#include <list>
#include <thread>
#include <vector>

#include "auth/relay_grants.hpp"
#include "auth/user_db.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "tls/certificate_dates.hpp"
#include "net/listener.hpp"
#include "net/redis_client.hpp"
#include "reload.hpp"
#include "session/backend_monitor.hpp"
#include "session/admission.hpp"
#include "session/credential_verifier.hpp"
#include "tls/client_verify.hpp"
#include "tls/server_context.hpp"

namespace smtpguard {
namespace {

bool uses_tls(const config& settings) {
  for (const auto& l : settings.listeners)
    if (l.tls != tls_mode::none) return true;
  return settings.pop3.enabled();  // POP3 listeners are all TLS
}

std::shared_ptr<const auth::user_db> load_users(const config& settings) {
  std::shared_ptr<const auth::user_db> users;
  try {
    users = std::make_shared<const auth::user_db>(auth::user_db::load(settings.auth.users_file));
  } catch (const std::exception& e) {
    throw config_error(std::string("auth.users_file: ") + e.what());
  }
  // Clients take the strongest mechanism offered and rarely fall back, so a
  // user without the secret is a user who cannot log in from such a client.
  const auto& offered = settings.auth.mechanisms;
  if (std::find(offered.begin(), offered.end(), "SCRAM-SHA-256") != offered.end() ||
      std::find(offered.begin(), offered.end(), "SCRAM-SHA-256-PLUS") != offered.end())
    if (const auto missing = users->without_scram_secret(); missing > 0)
      log::event("warning")
          .add("reason", "SCRAM-SHA-256 is offered but some users have no scram_sha256 secret (smtpguard passwd "
                         "prints one)")
          .add("users", static_cast<std::uint64_t>(missing));
  return users;
}

std::shared_ptr<asio::ssl::context> load_tls(const config& settings) {
  if (!uses_tls(settings)) return nullptr;
  try {
    auto context = tls::make_server_context(settings.tls);
    tls::configure_client_verification(context->native_handle(), settings.tls.client_certificates);
    return context;
  } catch (const std::exception& e) {
    throw config_error(std::string("tls.certificates: ") + e.what());
  }
}

// Ports below 1024 need root (or CAP_NET_BIND_SERVICE) only to bind; nothing
// after that does, so a root start gives up root before serving anyone.
void drop_privileges(const std::string& user) {
  if (::geteuid() != 0) return;
  if (user.empty()) {
    log::event("warning").add("reason", "running as root; set \"user\" in the configuration");
    return;
  }
  const passwd* account = ::getpwnam(user.c_str());
  if (!account) throw config_error("user: no such account \"" + user + "\"");
  if (::initgroups(account->pw_name, account->pw_gid) != 0 || ::setgid(account->pw_gid) != 0 ||
      ::setuid(account->pw_uid) != 0)
    throw std::runtime_error("cannot switch to user \"" + user + "\"");
  if (::setuid(0) == 0) throw std::runtime_error("still able to regain root after switching user");
  log::event("privileges_dropped").add("user", user);
}

}  // namespace

void check_runtime_files(const config& settings) {
  if (!settings.user.empty() && !::getpwnam(settings.user.c_str()))
    throw config_error("user: no such account \"" + settings.user + "\"");
  load_users(settings);
  load_tls(settings);
}

int run_server(std::shared_ptr<const config> settings) {
  std::signal(SIGPIPE, SIG_IGN);
  log::set_format(settings->log.format);

  metrics stats;
  session::session_registry sessions;
  session::credential_verifier verifier(settings->auth.verifier_threads, settings->auth.credential_cache_ttl,
                                        &stats);
  session::backend_monitor backend(settings, stats);
  // The certificates' dates as last loaded: the expiry gauges and /readyz.
  std::mutex dates_mutex;
  std::vector<tls::certificate_dates> dates;
  auto publish_dates = [&](const config& loaded) {
    auto fresh = tls::configured_certificate_dates(loaded.tls);
    stats.certificates(fresh);
    std::lock_guard lock(dates_mutex);
    dates = std::move(fresh);
  };
  publish_dates(*settings);
  // Which listeners exist needs a restart, so whether there is a POP3 front does too.
  std::unique_ptr<auth::relay_grants> pop_grants;
  if (settings->pop3.enabled()) {
    pop_grants = std::make_unique<auth::relay_grants>();
    stats.count_pop_before_smtp_clients(
        [grants = pop_grants.get()] { return static_cast<double>(grants->active(std::chrono::steady_clock::now())); });
  }
  if (settings->metrics.address) {
    stats.expose(settings->metrics.address->text, [&backend, &dates_mutex, &dates, &sessions] {
      if (sessions.draining()) return metrics::readiness{false, "draining"};
      if (!backend.up()) return metrics::readiness{false, "backend not answering EHLO"};
      std::lock_guard lock(dates_mutex);
      if (auto invalid = tls::invalid_served_certificate(dates, std::time(nullptr)))
        return metrics::readiness{false, "certificate " + *invalid};
      return metrics::readiness{true, "ready"};
    });
  }

  session::runtime initial;
  initial.settings = settings;
  initial.tls = load_tls(*settings);
  initial.users = load_users(*settings);
  initial.stats = &stats;
  initial.verifier = &verifier;
  initial.backend = &backend;
  initial.sessions = &sessions;
  initial.pop_grants = pop_grants.get();
  live_runtime live(std::move(initial));

  // What new sessions get; replaced by reloads, on the main thread only.
  std::shared_ptr<const config> current = settings;
  file_watch watch(reloadable_files(*settings));

  // Everything is parsed and loaded before anything replaces the old:
  // a reload is applied whole or not at all.
  auto reload = [&](std::string_view trigger) {
    try {
      auto next = std::make_shared<config>(load_config(current->path));
      const auto waiting = keep_restart_only_keys(*current, *next);
      std::shared_ptr<const config> applied = std::move(next);
      auto tls = load_tls(*applied);
      auto users = load_users(*applied);
      live.replace(applied, std::move(tls), std::move(users));
      backend.reconfigure(applied);
      verifier.set_cache_ttl(applied->auth.credential_cache_ttl);
      session::reconfigure_shared_limits(*applied);
      log::set_format(applied->log.format);
      watch = file_watch(reloadable_files(*applied));
      current = applied;
      std::string restart_needed;
      for (const auto& key : waiting) restart_needed += (restart_needed.empty() ? "" : ",") + key;
      if (!restart_needed.empty())
        log::event("warning").add("reason", "changed keys take effect at the next restart").add("keys", restart_needed);
      publish_dates(*applied);
      stats.reload("success");
      log::event("reload").add("trigger", trigger).add("result", "success");
    } catch (const std::exception& e) {
      stats.reload("failure");
      log::event("reload").add("trigger", trigger).add("result", "failure").add("error", e.what());
    }
  };

  const auto thread_count = static_cast<std::size_t>(settings->threads);
  // Before the contexts, so destroyed after them: a session frame destroyed
  // with its context may still be in a slot's line.
  std::vector<std::unique_ptr<session::handshake_slots>> tls_slots;
  for (std::size_t i = 0; i < thread_count; ++i) tls_slots.push_back(std::make_unique<session::handshake_slots>());
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  for (std::size_t i = 0; i < thread_count; ++i) contexts.push_back(std::make_unique<asio::io_context>(1));
  auto& main_context = *contexts.front();
  // After the contexts, so destroyed before them: the kept connections'
  // sockets and timers belong to the contexts.
  std::vector<std::unique_ptr<session::backend_pool>> pools;
  for (auto& context : contexts) pools.push_back(std::make_unique<session::backend_pool>(context->get_executor()));
  // Also destroyed before the contexts: c-ares's sockets are watched by them.
  // Only MX listeners ask blocklists; which listeners exist needs a restart.
  std::vector<std::unique_ptr<net::dns_resolver>> resolvers;
  const bool any_mx = std::any_of(settings->listeners.begin(), settings->listeners.end(),
                                  [](const listener_config& l) { return l.role == listener_role::mx; });
  for (auto& context : contexts)
    resolvers.push_back(any_mx ? std::make_unique<net::dns_resolver>(context->get_executor(),
                                                                     settings->relay.dns_servers,
                                                                     settings->relay.dnsbl_timeout)
                               : nullptr);
  // Likewise: a Redis connection's socket is watched by its thread's context.
  std::vector<std::unique_ptr<net::redis_client>> redis;
  const auto& shared = settings->shared_state;
  const net::redis_login redis_login{shared.username, shared.password, shared.database};
  for (auto& context : contexts)
    redis.push_back(shared.redis ? std::make_unique<net::redis_client>(context->get_executor(), *shared.redis,
                                                                       shared.timeout, redis_login)
                                 : nullptr);
  std::list<net::tcp::acceptor> acceptors;

  // Signals are caught before any port answers: a SIGHUP sent as soon as the
  // port is up must reload, not kill the process.
  asio::signal_set signals(main_context, SIGINT, SIGTERM, SIGHUP);
  // Sessions finish what they are doing (idle ones were told 421); the
  // process stops when the last one ends or at the deadline.
  auto drain_then_stop = [&]() -> asio::awaitable<void> {
    const auto deadline = std::chrono::steady_clock::now() + settings->timeouts.drain;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    // The kept backend connections are QUIT too, so no backend logs them as lost.
    auto busy = [&] {
      return sessions.active() > 0 ||
             std::any_of(pools.begin(), pools.end(), [](const auto& pool) { return !pool->closed(); });
    };
    while (busy() && std::chrono::steady_clock::now() < deadline) {
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(net::as_result);
    }
    log::event("stopping").add("sessions", static_cast<std::int64_t>(sessions.active()));
    for (auto& context : contexts) context->stop();
  };
  std::function<void(const asio::error_code&, int)> on_signal = [&](const asio::error_code& error,
                                                                    int number) {
    if (error) return;
    if (number == SIGHUP) {
      watch.changed();  // what SIGHUP loads need not be loaded again on the next poll
      reload("SIGHUP");
      signals.async_wait(on_signal);
      return;
    }
    for (auto& acceptor : acceptors) asio::post(acceptor.get_executor(), [&acceptor] { acceptor.close(); });
    if (sessions.draining()) {  // a second signal: stop now
      log::event("stopping").add("signal", number).add("sessions", static_cast<std::int64_t>(sessions.active()));
      for (auto& context : contexts) context->stop();
      return;
    }
    log::event("draining")
        .add("signal", number)
        .add("sessions", static_cast<std::int64_t>(sessions.active()))
        .add("deadline_s", static_cast<std::int64_t>(settings->timeouts.drain.count()));
    sessions.drain();
    for (auto& pool : pools) asio::post(pool->executor(), [&pool] { pool->close_all(); });
    asio::co_spawn(main_context, drain_then_stop(), asio::detached);
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);

  for (std::size_t i = 0; i < contexts.size(); ++i) {
    auto executor = contexts[i]->get_executor();
    session::backend_pool* pool = pools[i].get();
    session::handshake_slots* handshakes = tls_slots[i].get();
    net::dns_resolver* dns = resolvers[i].get();
    net::redis_client* shared_redis = redis[i].get();
    asio::co_spawn(executor, pool->run(), asio::detached);
    std::vector<const listener_config*> all_listeners;
    for (const auto& listener : settings->listeners) all_listeners.push_back(&listener);
    for (const auto& listener : settings->pop3.listeners) all_listeners.push_back(&listener);
    for (const listener_config* each : all_listeners) {
      const listener_config& listener = *each;
      auto& acceptor = acceptors.emplace_back(net::open_acceptor(executor, listener.address));
      asio::co_spawn(executor,
                     net::accept_loop(acceptor,
                                      [&listener, &live, executor, pool, handshakes, dns,
                                       shared_redis](net::tcp::socket socket) {
                                        session::runtime rt = live.get();
                                        rt.pool = pool;
                                        rt.handshakes = handshakes;
                                        rt.dns = dns;
                                        rt.redis = shared_redis;
                                        asio::co_spawn(executor,
                                                       session::run_client_session(std::move(socket),
                                                                                   listener, std::move(rt)),
                                                       asio::detached);
                                      }),
                     asio::detached);
    }
  }

  drop_privileges(settings->user);
  asio::co_spawn(main_context, backend.run(), asio::detached);
  // A reload may change the interval, or turn polling on or off.
  auto watcher = [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
      const auto interval = current->reload_check_interval;
      timer.expires_after(interval.count() > 0 ? interval : std::chrono::seconds(1));
      auto [error] = co_await timer.async_wait(net::as_result);
      if (error) co_return;
      if (interval.count() > 0 && watch.changed()) reload("file_change");
    }
  };
  asio::co_spawn(main_context, std::move(watcher), asio::detached);

  log::event("started")
      .add("version", SMTPGUARD_VERSION)
      .add("threads", static_cast<int>(thread_count))
      .add("listeners", static_cast<int>(settings->listeners.size() + settings->pop3.listeners.size()))
      .add("backend", settings->backend.servers.front().name);

  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < thread_count; ++i) threads.emplace_back([&, i] { contexts[i]->run(); });
  main_context.run();
  for (auto& context : contexts) context->stop();
  for (auto& t : threads) t.join();
  verifier.shutdown();
  stats.stop_exposing();
  log::event("stopped");
  return 0;
}

}  // namespace smtpguard
