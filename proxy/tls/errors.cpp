#include "tls/errors.hpp"

#include "tls/boringssl.hpp"

namespace smtpguard::tls {

std::string last_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0) return "unknown error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof buffer);
  ERR_clear_error();
  return buffer;
}

}  // namespace smtpguard::tls
