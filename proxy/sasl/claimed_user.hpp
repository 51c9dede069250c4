#pragma once
// The user name a client's first SASL response claims, for logs and failure
// budgets where the exchange itself is checked by someone else (the POP3
// server behind the POP3 front). Pure; never a proof of anything.
#include <string>
#include <string_view>

namespace smtpguard::sasl {

/// `mechanism` as sent (any case); `response` the first client response,
/// base64 as on the wire. Empty when the mechanism names no user there or
/// the response does not parse. PLAIN: the authentication identity;
/// LOGIN: the response; CRAM-MD5: the first word; SCRAM-*: n=.
std::string claimed_user(std::string_view mechanism, std::string_view response);

}  // namespace smtpguard::sasl
