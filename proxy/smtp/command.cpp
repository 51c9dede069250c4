#include "smtp/command.hpp"

#include <array>
#include <cstddef>
#include <utility>

#include "smtp/chars.hpp"

namespace smtpguard::smtp {
namespace {

constexpr std::array<std::pair<std::string_view, verb>, 14> verbs{{
    {"HELO", verb::helo},
    {"EHLO", verb::ehlo},
    {"MAIL", verb::mail},
    {"RCPT", verb::rcpt},
    {"DATA", verb::data},
    {"BDAT", verb::bdat},
    {"RSET", verb::rset},
    {"NOOP", verb::noop},
    {"QUIT", verb::quit},
    {"VRFY", verb::vrfy},
    {"EXPN", verb::expn},
    {"HELP", verb::help},
    {"STARTTLS", verb::starttls},
    {"AUTH", verb::auth},
}};

// RFC 5321 section 4.5.3.1.3, punctuation included.
constexpr std::size_t max_path_length = 256;
// RFC 5321 section 4.5.3.1.2.
constexpr std::size_t max_domain_length = 255;
constexpr std::size_t max_label_length = 63;

bool is_alpha(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// RFC 5322 atext, extended by RFC 6531 section 3.3 with UTF-8 octets.
bool is_atext(unsigned char c) {
  if (is_alnum(c) || c >= 0x80) return true;
  constexpr std::string_view specials = "!#$%&'*+-/=?^_`{|}~";
  return specials.find(static_cast<char>(c)) != std::string_view::npos;
}

// RFC 5321 qtextSMTP, plus UTF-8 octets (RFC 6531).
bool is_qtext(unsigned char c) {
  return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126) || c >= 0x80;
}

bool is_dot_string(std::string_view s) {
  if (s.empty()) return false;
  bool atom_empty = true;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '.') {
      if (atom_empty) return false;
      atom_empty = true;
    } else if (is_atext(c)) {
      atom_empty = false;
    } else {
      return false;
    }
  }
  return !atom_empty;
}

// Snum "." Snum "." Snum "." Snum, each 0-255 (RFC 5321 section 4.1.3).
bool is_ipv4(std::string_view s) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    std::size_t digits = 0;
    int value = 0;
    while (i < s.size() && is_digit(static_cast<unsigned char>(s[i])) && digits < 4) {
      value = value * 10 + (s[i] - '0');
      ++i;
      ++digits;
    }
    if (digits == 0 || digits > 3 || value > 255) return false;
    if (++parts == 4) return i == s.size();
    if (i == s.size() || s[i] != '.') return false;
    ++i;
  }
}

// IPv6-addr of RFC 5321 section 4.1.3: eight groups, or fewer with one "::",
// optionally ending in an IPv4 address that stands for two groups.
bool is_ipv6(std::string_view s) {
  if (s.empty()) return false;
  int groups = 0;
  bool compressed = false;
  std::size_t i = 0;
  if (s.substr(0, 2) == "::") {
    compressed = true;
    i = 2;
  } else if (s[0] == ':') {
    return false;
  }
  while (i < s.size()) {
    std::size_t j = i;
    while (j < s.size() && is_hex(static_cast<unsigned char>(s[j])) && j - i < 5) ++j;
    if (j < s.size() && s[j] == '.') {
      if (!is_ipv4(s.substr(i))) return false;
      groups += 2;
      break;
    }
    if (j == i || j - i > 4) return false;
    ++groups;
    i = j;
    if (i == s.size()) break;
    if (s[i] != ':') return false;
    ++i;
    if (i < s.size() && s[i] == ':') {
      if (compressed) return false;
      compressed = true;
      ++i;
    } else if (i == s.size()) {
      return false;
    }
  }
  return compressed ? groups <= 7 : groups == 8;
}

// Sequential parser over one MAIL/RCPT argument.
class path_parser {
 public:
  explicit path_parser(std::string_view text) : text_(text) {}

  bool at_end() const { return pos_ == text_.size(); }
  bool peek(char c) const { return pos_ < text_.size() && text_[pos_] == c; }
  bool take(char c) {
    if (!peek(c)) return false;
    ++pos_;
    return true;
  }
  std::size_t position() const { return pos_; }
  std::string_view rest() const { return text_.substr(pos_); }

  // "FROM:" / "TO:" matched case-insensitively, then at most one space.
  bool prefix(std::string_view word) {
    if (!iequals(text_.substr(0, word.size()), word)) return false;
    pos_ = word.size();
    take(' ');
    return true;
  }

  // Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
  // U-labels (RFC 6531) are accepted as UTF-8 octets.
  bool domain(std::string& out) {
    const std::size_t start = pos_;
    while (true) {
      const std::size_t label_start = pos_;
      bool eight_bit = false;
      unsigned char last = 0;
      while (pos_ < text_.size()) {
        const auto c = static_cast<unsigned char>(text_[pos_]);
        if (c >= 0x80) {
          eight_bit = true;
        } else if (!is_alnum(c) && !(c == '-' && pos_ != label_start)) {
          break;
        }
        last = c;
        ++pos_;
      }
      const std::size_t length = pos_ - label_start;
      if (length == 0 || last == '-') return false;
      if (!eight_bit && length > max_label_length) return false;
      if (!take('.')) break;
    }
    if (pos_ - start > max_domain_length) return false;
    out.append(text_.substr(start, pos_ - start));
    return true;
  }

  // "[" ( IPv4 / "IPv6:" IPv6 / tag ":" 1*dcontent ) "]" (RFC 5321 section 4.1.3).
  bool address_literal(std::string& out) {
    const std::size_t start = pos_;
    if (!take('[')) return false;
    const auto close = text_.find(']', pos_);
    if (close == std::string_view::npos) return false;
    const std::string_view inside = text_.substr(pos_, close - pos_);
    pos_ = close + 1;
    if (!valid_literal(inside)) return false;
    out.append(text_.substr(start, pos_ - start));
    return true;
  }

  // Local-part = Dot-string / Quoted-string; a quoted local part is kept
  // quoted only when it cannot be written as a Dot-string.
  bool local_part(std::string& out, bool& quoted) {
    quoted = peek('"');
    if (!quoted) {
      const std::size_t start = pos_;
      while (pos_ < text_.size() &&
             (is_atext(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.')) {
        ++pos_;
      }
      const std::string_view local = text_.substr(start, pos_ - start);
      if (!is_dot_string(local)) return false;
      out.append(local);
      return true;
    }
    ++pos_;
    std::string content;
    while (true) {
      if (at_end()) return false;
      const auto c = static_cast<unsigned char>(text_[pos_++]);
      if (c == '"') break;
      if (c == '\\') {
        if (at_end()) return false;
        const auto escaped = static_cast<unsigned char>(text_[pos_++]);
        if (escaped < 32 || escaped > 126) return false;
        content += static_cast<char>(escaped);
      } else if (is_qtext(c)) {
        content += static_cast<char>(c);
      } else {
        return false;
      }
    }
    if (is_dot_string(content)) {
      out += content;
      return true;
    }
    out += '"';
    for (const char c : content) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
    return true;
  }

 private:
  static bool valid_literal(std::string_view inside) {
    if (is_ipv4(inside)) return true;
    const auto colon = inside.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    const std::string_view tag = inside.substr(0, colon);
    const std::string_view value = inside.substr(colon + 1);
    if (iequals(tag, "IPv6")) return is_ipv6(value);
    // General-address-literal: Standardized-tag ":" 1*dcontent.
    if (!is_alnum(static_cast<unsigned char>(tag.front())) ||
        !is_alnum(static_cast<unsigned char>(tag.back()))) {
      return false;
    }
    for (const char c : tag) {
      if (!is_alnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    if (value.empty()) return false;
    for (const char ch : value) {
      const auto c = static_cast<unsigned char>(ch);
      if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']') return false;
    }
    return true;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

bool valid_keyword(std::string_view k) {
  if (k.empty() || !is_alnum(static_cast<unsigned char>(k.front()))) return false;
  for (const char c : k) {
    if (!is_alnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

bool valid_value(std::string_view v) {
  if (v.empty()) return false;
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 33 || c > 126 || c == '=') return false;
  }
  return true;
}

// Mail-parameters = esmtp-param *(SP esmtp-param) (RFC 5321 section 4.1.2).
bool parse_parameters(std::string_view text, std::vector<mail_parameter>& out) {
  while (!text.empty()) {
    const auto space = text.find(' ');
    const std::string_view item = text.substr(0, space);
    if (space == std::string_view::npos) {
      text = {};
    } else {
      text.remove_prefix(space + 1);
      if (text.empty()) return false;
    }
    mail_parameter p;
    const auto eq = item.find('=');
    const std::string_view keyword = item.substr(0, eq);
    if (!valid_keyword(keyword)) return false;
    p.keyword = to_upper(keyword);
    if (eq != std::string_view::npos) {
      const std::string_view value = item.substr(eq + 1);
      if (!valid_value(value)) return false;
      p.value = std::string(value);
      p.has_value = true;
    }
    for (const auto& seen : out) {
      if (seen.keyword == p.keyword) return false;
    }
    out.push_back(std::move(p));
  }
  return true;
}

enum class path_kind { reverse, forward };

std::optional<path_argument> parse_path(std::string_view argument, std::string_view prefix,
                                        path_kind kind) {
  path_parser in(argument);
  if (!in.prefix(prefix)) return std::nullopt;
  const std::size_t path_start = in.position();
  if (!in.take('<')) return std::nullopt;

  path_argument result;
  if (in.take('>')) {
    if (kind != path_kind::reverse) return std::nullopt;
  } else {
    // A-d-l ":" source route: parsed for syntax, then ignored (RFC 5321 section 4.1.2, C).
    if (in.peek('@')) {
      std::string ignored;
      do {
        if (!in.take('@') || !in.domain(ignored)) return std::nullopt;
      } while (in.take(','));
      if (!in.take(':')) return std::nullopt;
    }
    bool quoted = false;
    if (!in.local_part(result.mailbox, quoted)) return std::nullopt;
    if (in.take('@')) {
      result.mailbox += '@';
      if (in.peek('[') ? !in.address_literal(result.mailbox) : !in.domain(result.mailbox)) {
        return std::nullopt;
      }
    } else if (kind != path_kind::forward || quoted || !iequals(result.mailbox, "postmaster")) {
      return std::nullopt;
    }
    if (!in.take('>')) return std::nullopt;
  }
  if (in.position() - path_start > max_path_length) return std::nullopt;

  for (const char c : result.mailbox) {
    if (static_cast<unsigned char>(c) >= 0x80) result.has_8bit = true;
  }
  if (result.has_8bit && !is_valid_utf8(result.mailbox)) return std::nullopt;

  std::string_view rest = in.rest();
  if (!rest.empty()) {
    if (rest.front() != ' ') return std::nullopt;
    rest.remove_prefix(1);
    if (rest.empty() || !parse_parameters(rest, result.parameters)) return std::nullopt;
  }
  return result;
}

std::string format_path(std::string_view command, const path_argument& path) {
  std::string out(command);
  out += '<';
  out += path.mailbox;
  out += '>';
  for (const auto& p : path.parameters) {
    out += ' ';
    out += p.keyword;
    if (p.has_value) {
      out += '=';
      out += p.value;
    }
  }
  return out;
}

}  // namespace

command parse_command(std::string_view line) {
  command result;
  const auto space = line.find(' ');
  result.keyword = line.substr(0, space);
  for (const auto& [name, v] : verbs) {
    if (iequals(result.keyword, name)) {
      result.name = v;
      break;
    }
  }
  if (space != std::string_view::npos) {
    std::string_view argument = line.substr(space);
    const auto first = argument.find_first_not_of(' ');
    if (first != std::string_view::npos) {
      argument.remove_prefix(first);
      argument.remove_suffix(argument.size() - 1 - argument.find_last_not_of(' '));
      result.argument = argument;
    }
  }
  return result;
}

std::optional<path_argument> parse_mail_from(std::string_view argument) {
  return parse_path(argument, "FROM:", path_kind::reverse);
}

std::optional<path_argument> parse_rcpt_to(std::string_view argument) {
  return parse_path(argument, "TO:", path_kind::forward);
}

std::string format_mail_from(const path_argument& path) { return format_path("MAIL FROM:", path); }

std::string format_rcpt_to(const path_argument& path) { return format_path("RCPT TO:", path); }

}  // namespace smtpguard::smtp
