#include "smtp/dnsbl.hpp"

namespace smtpguard::smtp {

std::string dnsbl_query_name(std::span<const std::uint8_t> bytes, std::string_view zone) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string name;
  for (auto it = bytes.rbegin(); it != bytes.rend(); ++it) {
    if (bytes.size() == 4) {
      name += std::to_string(*it);
    } else {
      name += hex[*it & 0x0f];
      name += '.';
      name += hex[*it >> 4];
    }
    name += '.';
  }
  name += zone;
  return name;
}

bool dnsbl_listing(const std::array<std::uint8_t, 4>& answer) {
  return answer[0] == 127 && !(answer[1] == 255 && answer[2] == 255);
}

}  // namespace smtpguard::smtp
