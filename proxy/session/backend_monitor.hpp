#pragma once
// What the backend offers, learned by probing it (connect, EHLO, QUIT) at
// start and then periodically, so that the EHLO we answer before any backend
// connection exists advertises only what the backend really supports.
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "config.hpp"
#include "metrics.hpp"
#include "net/asio_fwd.hpp"
#include "smtp/capabilities.hpp"

namespace smtpguard::session {

class backend_monitor {
 public:
  backend_monitor(std::shared_ptr<const config> settings, metrics& stats);

  /// Probes the backend of a reloaded configuration from the next probe on.
  void reconfigure(std::shared_ptr<const config> settings);

  /// The last capabilities learned; a conservative default until the first probe.
  std::shared_ptr<const smtp::capabilities> capabilities() const;
  /// Records what a session's own backend connection saw.
  void update(const smtp::capabilities& seen);
  bool up() const;
  /// True if the last probe of this backend (by its address as written) failed.
  bool down(const std::string& address) const;

  /// Probes forever (until cancelled or the context stops).
  net::awaitable<void> run();
  /// One probe of every backend; true if any answered EHLO.
  net::awaitable<bool> probe();

 private:
  std::shared_ptr<const config> settings() const;

  std::shared_ptr<const config> settings_;  ///< guarded by mutex_
  metrics& stats_;
  mutable std::mutex mutex_;
  std::shared_ptr<const smtp::capabilities> capabilities_;
  bool up_ = false;
  std::set<std::string> down_;  ///< backends whose last probe failed
};

}  // namespace smtpguard::session
