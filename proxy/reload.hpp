#pragma once
// Certificates, keys, CAs, CRLs and the users file are replaced while the
// process runs (SIGHUP, or the files change as cert-manager and ACME clients
// rewrite them). Sessions keep what they started with; new sessions get the
// new material. A broken new file keeps the old material serving.
#include <mutex>
#include <string>
#include <sys/types.h>
#include <vector>

#include "session/runtime.hpp"

namespace smtpguard {

/// The runtime new sessions start with, swapped whole under a lock.
class live_runtime {
 public:
  explicit live_runtime(session::runtime initial) : current_(std::move(initial)) {}

  session::runtime get() const {
    std::lock_guard lock(mutex_);
    return current_;
  }
  void replace(std::shared_ptr<const config> settings, std::shared_ptr<asio::ssl::context> tls,
               std::shared_ptr<const auth::user_db> users) {
    std::lock_guard lock(mutex_);
    current_.settings = std::move(settings);
    current_.tls = std::move(tls);
    current_.users = std::move(users);
  }

 private:
  mutable std::mutex mutex_;
  session::runtime current_;
};

/// Notices that any of a set of files was replaced or rewritten, by polling
/// stat(2): it follows symlinks, so the atomic symlink swaps of Kubernetes
/// secret volumes are seen as well as in-place writes.
class file_watch {
 public:
  explicit file_watch(std::vector<std::string> paths);
  /// True when some file differs from the last call (or from construction).
  bool changed();

 private:
  struct seen {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = -1;
    long long modified_ns = 0;
    bool operator==(const seen&) const = default;
  };
  std::vector<seen> snapshot() const;

  std::vector<std::string> paths_;
  std::vector<seen> last_;
};

/// The configuration file and every file the TLS contexts and the users
/// database are built from.
std::vector<std::string> reloadable_files(const config& settings);

/// What a reload cannot change in a running process: the listeners (bound
/// sockets), threads, the account switched to, the metrics listener and the
/// verifier pool. Copies them from `running` into `next` and returns the keys
/// whose new values therefore wait for a restart.
std::vector<std::string> keep_restart_only_keys(const config& running, config& next);

}  // namespace smtpguard
