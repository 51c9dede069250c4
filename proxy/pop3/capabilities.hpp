#pragma once
// What CAPA (RFC 2449) tells a client through the front: the backend's list,
// less what only the front may offer or what cannot pass through it.
#include <string>
#include <string_view>
#include <vector>

namespace smtpguard::pop3 {

/// The session's side of the offer.
struct capability_offer {
  bool stls = false;   ///< a STLS listener before TLS
  bool login = false;  ///< USER/APOP/AUTH accepted now (only over TLS)
};

/// The lines of the backend's CAPA response (between "+OK" and "."), as the
/// client should see them: the backend's STLS never (the backend has no TLS
/// to the client); USER and SASL only when login is possible; SASL without
/// the -PLUS mechanisms, whose channel binding would name the front's TLS,
/// which the backend cannot see; our STLS when offered.
std::vector<std::string> filter_capabilities(const std::vector<std::string>& backend_lines, capability_offer offer);

/// The mechanism names of a legacy bare "AUTH" listing (one per line) that
/// may pass: all but the -PLUS ones.
bool mechanism_passes(std::string_view name);

}  // namespace smtpguard::pop3
