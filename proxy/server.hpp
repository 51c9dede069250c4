#pragma once
// The running process: one io_context per thread, every listener bound on
// every thread, the backend monitor, metrics and signal handling.
#include <memory>

#include "config.hpp"

namespace smtpguard {

/// Everything `--check-config` validates beyond the JSON: the users file
/// loads and the TLS certificates and keys load and match. Throws
/// config_error naming the JSON path of the culprit.
void check_runtime_files(const config& settings);

/// Runs until SIGINT or SIGTERM. Returns the process exit code.
int run_server(std::shared_ptr<const config> settings);

}  // namespace smtpguard
