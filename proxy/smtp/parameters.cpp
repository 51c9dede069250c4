#include "smtp/parameters.hpp"

#include <algorithm>

#include "smtp/chars.hpp"

namespace smtpguard::smtp {

bool parameters_supported(const path_argument& path, const capabilities& backend, bool mail) {
  for (const auto& p : path.parameters) {
    if (mail && p.keyword == "SIZE") continue;
    if (mail && p.keyword == "BODY") {
      // RFC 6152 values, which MTAs compare without regard to case.
      if (iequals(p.value, "7BIT")) continue;
      if (iequals(p.value, "8BITMIME") && backend.eightbitmime) continue;
      return false;
    }
    if (mail && p.keyword == "SMTPUTF8" && !p.has_value && backend.smtputf8) continue;
    if (mail && (p.keyword == "RET" || p.keyword == "ENVID") && backend.dsn) continue;
    if (!mail && (p.keyword == "NOTIFY" || p.keyword == "ORCPT") && backend.dsn) continue;
    return false;
  }
  return true;
}

bool has_parameter(const path_argument& path, std::string_view keyword) {
  return std::any_of(path.parameters.begin(), path.parameters.end(),
                     [&](const mail_parameter& p) { return p.keyword == keyword; });
}

void strip_auth_parameter(path_argument& path) {
  std::erase_if(path.parameters, [](const mail_parameter& p) { return p.keyword == "AUTH"; });
}

}  // namespace smtpguard::smtp
