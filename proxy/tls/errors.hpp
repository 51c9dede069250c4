#pragma once
#include <string>

namespace smtpguard::tls {

/// Takes the oldest error off this thread's BoringSSL error queue as text,
/// and clears the queue so the next failure starts from a clean slate.
std::string last_error();

}  // namespace smtpguard::tls
