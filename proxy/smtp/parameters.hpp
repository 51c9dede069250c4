#pragma once
// MAIL FROM and RCPT TO parameters (RFC 5321 section 4.1.2): which of them a
// backend can be handed, as its EHLO described it.
#include <string_view>

#include "smtp/capabilities.hpp"
#include "smtp/command.hpp"

namespace smtpguard::smtp {

/// True when the backend can take every parameter of `path`: MAIL FROM's
/// (`mail`) or RCPT TO's. SIZE and BODY=7BIT need nothing; BODY=8BITMIME,
/// SMTPUTF8 and the DSN parameters need the backend to have advertised them.
bool parameters_supported(const path_argument& path, const capabilities& backend, bool mail);

/// True when `path` carries the parameter `keyword` (upper case).
bool has_parameter(const path_argument& path, std::string_view keyword);

/// Removes AUTH= from MAIL FROM (RFC 4954 section 5): it is about the
/// client's own identity claims and means nothing to a backend that did not
/// authenticate it (a backend configured for it is told the user smtpguard
/// authenticated instead).
void strip_auth_parameter(path_argument& path);

}  // namespace smtpguard::smtp
