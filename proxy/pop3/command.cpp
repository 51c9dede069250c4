#include "pop3/command.hpp"

#include <array>
#include <utility>

namespace smtpguard::pop3 {
namespace {

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != b[i]) return false;
  }
  return true;
}

constexpr std::array<std::pair<std::string_view, verb>, 7> verbs{{
    {"CAPA", verb::capa},
    {"STLS", verb::stls},
    {"USER", verb::user},
    {"PASS", verb::pass},
    {"APOP", verb::apop},
    {"AUTH", verb::auth},
    {"QUIT", verb::quit},
}};

}  // namespace

command parse_command(std::string_view line) {
  command cmd;
  const auto space = line.find(' ');
  cmd.keyword = line.substr(0, space);
  if (space != std::string_view::npos) cmd.argument = line.substr(space + 1);
  for (const auto& [name, value] : verbs)
    if (equals_ignoring_case(cmd.keyword, name)) cmd.name = value;
  return cmd;
}

std::string_view user_name(const command& cmd) {
  if (cmd.name == verb::user) return cmd.argument;
  if (cmd.name == verb::apop) return cmd.argument.substr(0, cmd.argument.find(' '));
  return {};
}

}  // namespace smtpguard::pop3
