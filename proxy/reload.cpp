#include "reload.hpp"

#include <sys/stat.h>

namespace smtpguard {

file_watch::file_watch(std::vector<std::string> paths) : paths_(std::move(paths)), last_(snapshot()) {}

std::vector<file_watch::seen> file_watch::snapshot() const {
  std::vector<seen> out;
  out.reserve(paths_.size());
  for (const auto& path : paths_) {
    struct stat st {};
    seen s;
    if (::stat(path.c_str(), &st) == 0) {
      s.device = st.st_dev;
      s.inode = st.st_ino;
      s.size = st.st_size;
      s.modified_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    }
    out.push_back(s);
  }
  return out;
}

bool file_watch::changed() {
  auto now = snapshot();
  if (now == last_) return false;
  last_ = std::move(now);
  return true;
}

std::vector<std::string> reloadable_files(const config& settings) {
  std::vector<std::string> files{settings.auth.users_file};
  if (!settings.path.empty()) files.push_back(settings.path);
  for (const auto& c : settings.tls.certificates) {
    files.push_back(c.cert);
    files.push_back(c.key);
  }
  const auto& client = settings.tls.client_certificates;
  if (!client.ca.empty()) files.push_back(client.ca);
  files.insert(files.end(), client.crl.begin(), client.crl.end());
  return files;
}

namespace {

std::string describe(const endpoint& e) { return e.text; }

std::string describe(const std::vector<listener_config>& listeners) {
  std::string out;
  for (const auto& l : listeners) {
    out += l.name + "|" + describe(l.address) + "|" + std::to_string(static_cast<int>(l.tls)) + "|" +
           std::to_string(l.require_tls) + std::to_string(l.allow_plaintext_auth) + "|" +
           (l.client_certificates ? std::to_string(static_cast<int>(*l.client_certificates)) : "-") + ";";
  }
  return out;
}

}  // namespace

std::vector<std::string> keep_restart_only_keys(const config& running, config& next) {
  std::vector<std::string> waiting;
  if (describe(next.listeners) != describe(running.listeners)) waiting.push_back("listeners");
  if (describe(next.pop3.listeners) != describe(running.pop3.listeners)) waiting.push_back("pop3.listeners");
  if (next.threads != running.threads) waiting.push_back("threads");
  if (next.user != running.user) waiting.push_back("user");
  const auto metrics_text = [](const config& c) { return c.metrics.address ? c.metrics.address->text : ""; };
  if (metrics_text(next) != metrics_text(running)) waiting.push_back("metrics.address");
  if (next.auth.verifier_threads != running.auth.verifier_threads) waiting.push_back("auth.verifier_threads");
  const auto shared_text = [](const config& c) {
    const auto& s = c.shared_state;
    return (s.redis ? s.redis->text : "") + "|" + std::to_string(s.timeout.count()) + "|" + s.username + "|" +
           s.password + "|" + std::to_string(s.database);
  };
  if (shared_text(next) != shared_text(running)) waiting.push_back("shared_state");
  // Each I/O thread's resolver is made with them at start.
  if (next.relay.dns_servers != running.relay.dns_servers || next.relay.dnsbl_timeout != running.relay.dnsbl_timeout)
    waiting.push_back("relay.dnsbl.servers/timeout_ms");
  next.listeners = running.listeners;
  next.pop3.listeners = running.pop3.listeners;
  next.threads = running.threads;
  next.user = running.user;
  next.metrics = running.metrics;
  next.auth.verifier_threads = running.auth.verifier_threads;
  // Each I/O thread's Redis connection is made, and logs in, once: only the
  // key prefix follows a reload.
  const std::string key_prefix = next.shared_state.key_prefix;
  next.shared_state = running.shared_state;
  next.shared_state.key_prefix = key_prefix;
  next.relay.dns_servers = running.relay.dns_servers;
  next.relay.dnsbl_timeout = running.relay.dnsbl_timeout;
  return waiting;
}

}  // namespace smtpguard
