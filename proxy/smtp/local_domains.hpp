#pragma once
// The MX role's relay rule: a client that is not authorized to relay may
// only send to the domains this server receives mail for.
#include <string>
#include <string_view>
#include <vector>

namespace smtpguard::smtp {

/// Whether `mailbox` ("local@domain", as parsed from RCPT TO) is for one of
/// `domains`: "example.org" matches that domain only, ".example.org" its
/// subdomains only (Postfix's notation), both without regard to case and to
/// one trailing dot. A mailbox without a domain is RCPT TO:<postmaster>,
/// which every server must accept (RFC 5321 section 4.5.1).
bool local_recipient(std::string_view mailbox, const std::vector<std::string>& domains);

/// Whether `entry` is a domain the configuration may list: labels of
/// letters, digits and hyphens (or UTF-8, for internationalized names),
/// optionally with a leading dot; no address literal.
bool valid_local_domain(std::string_view entry);

}  // namespace smtpguard::smtp
