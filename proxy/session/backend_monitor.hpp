#pragma once
// What the backend offers, learned by probing it (connect, EHLO, QUIT) at
// start and then periodically, so that the EHLO we answer before any backend
// connection exists advertises only what the backend really supports.
#include <memory>
#include <mutex>

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

  /// Probes forever (until cancelled or the context stops).
  net::awaitable<void> run();
  /// One probe; true if the backend answered EHLO.
  net::awaitable<bool> probe();

 private:
  std::shared_ptr<const config> settings() const;

  std::shared_ptr<const config> settings_;  ///< guarded by mutex_
  metrics& stats_;
  mutable std::mutex mutex_;
  std::shared_ptr<const smtp::capabilities> capabilities_;
  bool up_ = false;
};

}  // namespace smtpguard::session
