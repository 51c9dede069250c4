#pragma once
// The public-key and record-cipher work a TLS 1.3 server does per handshake,
// timed with the TLS library smtpguard links: the floor under the CPU cost of
// a session, and where that library is slower than the one the peers use.
#include <string>

namespace smtpguard::bench {

/// Times each operation for about `seconds` / 4 on the calling thread and
/// returns one JSON object (microseconds per operation, MB/s for AES-GCM).
std::string crypto_floor_json(double seconds);

}  // namespace smtpguard::bench
