#include "session/shared_state.hpp"

#include <atomic>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "log.hpp"
#include "net/redis_client.hpp"

namespace smtpguard::session {
namespace {

using steady_clock = std::chrono::steady_clock;
using reply_type = net::redis_reply::type;

// One round trip per failure (or message), as lockout_table counts: a
// window starts with the first count; at the limit the lock is set and the
// count starts afresh. KEYS: counter and lock of the address, then of the
// user (when there is one); ARGV: window ms, lockout ms, address limit, user
// limit (0: none), weight (1, or a message's recipients).
constexpr std::string_view failure_script = R"(
local function count(failures, lock, limit)
  if limit <= 0 then return end
  local weight = tonumber(ARGV[5])
  local n = redis.call('INCRBY', failures, weight)
  if n == weight then redis.call('PEXPIRE', failures, ARGV[1]) end
  if n >= limit then
    redis.call('SET', lock, '1', 'PX', ARGV[2])
    redis.call('DEL', failures)
  end
end
count(KEYS[1], KEYS[2], tonumber(ARGV[3]))
if #KEYS == 4 then count(KEYS[3], KEYS[4], tonumber(ARGV[4])) end
return 1
)";

// Said once per half minute per process, not once per session: when Redis
// is down, every session would say it.
void report_unavailable(metrics* stats, const net::redis_reply* error) {
  if (stats != nullptr) stats->shared_state_error();
  static std::atomic<std::int64_t> last_said{0};
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(steady_clock::now().time_since_epoch()).count();
  std::int64_t said = last_said.load();
  if (said != 0 && now - said < 30) return;
  if (!last_said.compare_exchange_strong(said, now)) return;
  log::event("shared_state_unavailable")
      .add("error", error != nullptr ? error->text : std::string("no answer"))
      .add("effect", "lockouts, send budgets and POP-before-SMTP grants are this replica's own until Redis answers");
}

// The reply, unless Redis did not answer or answered with an error.
const net::redis_reply* usable(const std::optional<net::redis_reply>& reply, metrics* stats) {
  if (reply && reply->kind != reply_type::error) return &*reply;
  report_unavailable(stats, reply ? &*reply : nullptr);
  return nullptr;
}

std::string milliseconds(std::chrono::seconds s) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(s).count());
}

}  // namespace

auth::lockout_settings send_budgets(const config& settings, send_budget which) {
  const bool messages = which == send_budget::messages;
  auth::lockout_settings budgets;
  budgets.ip_failures = messages ? settings.limits.max_messages_per_ip : settings.limits.max_recipients_per_ip;
  budgets.user_failures = messages ? settings.limits.max_messages_per_user : settings.limits.max_recipients_per_user;
  budgets.window = settings.limits.message_window;
  budgets.lockout = settings.limits.message_window;
  budgets.max_tracked = settings.auth.lockout.max_tracked;
  return budgets;
}

std::string shared_state::key(std::string_view kind, std::string_view name) const {
  std::string out = rt_.settings->shared_state.key_prefix;
  out += kind;
  out += ':';
  out += name;
  return out;
}

net::awaitable<bool> shared_state::ip_locked(std::string ip_key) {
  if (lockouts_->ip_locked(ip_key, steady_clock::now())) co_return true;
  if (rt_.redis == nullptr) co_return false;
  std::vector<std::string> command{"EXISTS", key(std::string(failure_keys.locked) + ":ip", ip_key)};
  const auto reply = co_await rt_.redis->call(std::move(command));
  const net::redis_reply* answer = usable(reply, rt_.stats);
  co_return answer != nullptr && answer->kind == reply_type::integer && answer->integer > 0;
}

net::awaitable<auth::lockout_scope> shared_state::remote_locked(const budget_keys& names, std::string ip_key,
                                                                std::string user) {
  std::vector<std::string> command{"MGET", key(std::string(names.locked) + ":ip", ip_key)};
  if (!user.empty()) command.push_back(key(std::string(names.locked) + ":user", user));
  const auto reply = co_await rt_.redis->call(std::move(command));
  const net::redis_reply* answer = usable(reply, rt_.stats);
  if (answer == nullptr || answer->kind != reply_type::array) co_return auth::lockout_scope::none;
  const auto& items = answer->items;
  if (!items.empty() && items[0].kind == reply_type::string) co_return auth::lockout_scope::ip;
  if (items.size() > 1 && items[1].kind == reply_type::string) co_return auth::lockout_scope::user;
  co_return auth::lockout_scope::none;
}

net::awaitable<void> shared_state::count_remote(const budget_keys& names, const auth::lockout_settings& budgets,
                                                const std::string& ip_key, const std::string& user,
                                                int weight) {
  const std::string counted(names.counted);
  const std::string locked(names.locked);
  std::vector<std::string> command{"EVAL", std::string(failure_script), user.empty() ? "2" : "4",
                                   key(counted + ":ip", ip_key), key(locked + ":ip", ip_key)};
  if (!user.empty()) {
    command.push_back(key(counted + ":user", user));
    command.push_back(key(locked + ":user", user));
  }
  command.push_back(milliseconds(budgets.window));
  command.push_back(milliseconds(budgets.lockout));
  command.push_back(std::to_string(budgets.ip_failures));
  command.push_back(std::to_string(budgets.user_failures));
  command.push_back(std::to_string(weight));
  const auto reply = co_await rt_.redis->call(std::move(command));
  usable(reply, rt_.stats);
}

net::awaitable<auth::lockout_scope> shared_state::locked(std::string ip_key, std::string user) {
  const auto local = lockouts_->is_locked(ip_key, user, steady_clock::now());
  if (local != auth::lockout_scope::none || rt_.redis == nullptr) co_return local;
  const auto remote = co_await remote_locked(failure_keys, std::move(ip_key), std::move(user));
  co_return remote;
}

net::awaitable<auth::lockout_scope> shared_state::record_failure(std::string ip_key, std::string user) {
  lockouts_->record_failure(ip_key, user, steady_clock::now());
  if (rt_.redis != nullptr) {
    co_await count_remote(failure_keys, rt_.settings->auth.lockout, ip_key, user);
  }
  const auto scope = co_await locked(std::move(ip_key), std::move(user));
  co_return scope;
}

auth::lockout_table* shared_state::table(send_budget which) const {
  return which == send_budget::messages ? rt_.message_counts : rt_.recipient_counts;
}

net::awaitable<auth::lockout_scope> shared_state::spent(send_budget which, std::string ip_key, std::string user) {
  auth::lockout_table* counts = table(which);
  if (counts == nullptr) co_return auth::lockout_scope::none;
  const auto local = counts->is_locked(ip_key, user, steady_clock::now());
  if (local != auth::lockout_scope::none || rt_.redis == nullptr) co_return local;
  const budget_keys& names = which == send_budget::messages ? message_keys : recipient_keys;
  const auto remote = co_await remote_locked(names, std::move(ip_key), std::move(user));
  co_return remote;
}

net::awaitable<void> shared_state::count(send_budget which, std::string ip_key, std::string user, int weight) {
  auth::lockout_table* counts = table(which);
  if (counts == nullptr || weight <= 0) co_return;
  std::optional<int> own;
  if (const auth::user_record* record = user.empty() || !rt_.users ? nullptr : rt_.users->find(user))
    own = which == send_budget::messages ? record->message_budget : record->recipient_budget;
  counts->record_failure(ip_key, user, steady_clock::now(), weight, own);
  if (rt_.redis != nullptr) {
    auth::lockout_settings budgets = send_budgets(*rt_.settings, which);
    if (own) budgets.user_failures = *own;
    const budget_keys& names = which == send_budget::messages ? message_keys : recipient_keys;
    co_await count_remote(names, budgets, ip_key, user, weight);
  }
}

net::awaitable<bool> shared_state::relay_granted(std::string address) {
  if (rt_.pop_grants != nullptr && rt_.pop_grants->permitted(address, steady_clock::now())) co_return true;
  if (rt_.redis == nullptr) co_return false;
  std::vector<std::string> command{"EXISTS", key("pop", address)};
  const auto reply = co_await rt_.redis->call(std::move(command));
  const net::redis_reply* answer = usable(reply, rt_.stats);
  co_return answer != nullptr && answer->kind == reply_type::integer && answer->integer > 0;
}

net::awaitable<void> shared_state::grant_relay(std::string address, std::chrono::seconds ttl) {
  if (rt_.pop_grants != nullptr) rt_.pop_grants->grant(address, ttl, steady_clock::now());
  if (rt_.redis == nullptr) co_return;
  std::vector<std::string> command{"SET", key("pop", address), "1", "PX", milliseconds(ttl)};
  const auto reply = co_await rt_.redis->call(std::move(command));
  usable(reply, rt_.stats);
}

}  // namespace smtpguard::session
