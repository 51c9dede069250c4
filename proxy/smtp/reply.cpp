#include "smtp/reply.hpp"

#include <utility>

namespace smtpguard::smtp {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_id_char(char c) {
  return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '.' || c == '-' || c == '_';
}

// The id-like token starting at `pos`, or empty.
std::string_view id_at(std::string_view text, std::size_t pos) {
  std::size_t end = pos;
  while (end < text.size() && is_id_char(text[end])) ++end;
  const std::string_view token = text.substr(pos, end - pos);
  return token.size() <= 64 ? token : std::string_view{};
}

// The token after `marker` (case-insensitive), or empty.
std::string_view id_after(std::string_view text, std::string_view marker) {
  for (std::size_t i = 0; i + marker.size() <= text.size(); ++i) {
    bool same = true;
    for (std::size_t j = 0; j < marker.size() && same; ++j) {
      char a = text[i + j];
      char b = marker[j];
      if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
      same = a == b;
    }
    if (same) return id_at(text, i + marker.size());
  }
  return {};
}

// Length of a leading run of 1-3 digits, 0 if there is none or it is longer.
std::size_t digits_1_to_3(std::string_view s, std::size_t pos) {
  std::size_t n = 0;
  while (pos + n < s.size() && is_digit(s[pos + n])) ++n;
  return n <= 3 ? n : 0;
}

// RFC 3463 section 2: class "." subject "." detail, class being 2, 4 or 5 and
// matching the reply code; followed by a space or the end of the line.
std::string_view leading_enhanced_code(std::string_view line, int reply_class) {
  if (reply_class != 2 && reply_class != 4 && reply_class != 5) return {};
  if (line.size() < 5 || line[0] != static_cast<char>('0' + reply_class) || line[1] != '.') return {};
  const std::size_t subject = digits_1_to_3(line, 2);
  if (subject == 0) return {};
  std::size_t pos = 2 + subject;
  if (pos >= line.size() || line[pos] != '.') return {};
  const std::size_t detail = digits_1_to_3(line, pos + 1);
  if (detail == 0) return {};
  pos += 1 + detail;
  if (pos < line.size() && line[pos] != ' ') return {};
  return line.substr(0, pos);
}

// Reply text as RFC 5321 textstring (HT, SP, printable), plus UTF-8 octets
// that some servers send in their texts.
bool printable_text(std::string_view text) {
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\t' || (c >= 0x20 && c < 0x7f) || c >= 0x80) continue;
    return false;
  }
  return true;
}

}  // namespace

std::string reply::serialize() const {
  std::string out;
  append_to(out);
  return out;
}

void reply::append_to(std::string& out) const {
  const std::string code_text = std::to_string(code);
  if (lines.empty()) {
    out += code_text;
    out += "\r\n";
    return;
  }
  for (std::size_t i = 0; i < lines.size(); ++i) {
    out += code_text;
    out += (i + 1 < lines.size()) ? '-' : ' ';
    out += lines[i];
    out += "\r\n";
  }
}

reply make_reply(int code, std::string_view text) { return reply{code, {std::string(text)}}; }

std::string_view reply::enhanced_code() const {
  if (lines.empty()) return {};
  return leading_enhanced_code(lines.front(), reply_class());
}

std::string queue_id(const reply& r) {
  for (const auto& full : r.lines) {
    std::string_view line = full;
    if (const auto code = r.enhanced_code(); !code.empty() && line.starts_with(code)) line.remove_prefix(code.size());
    while (line.starts_with(' ')) line.remove_prefix(1);
    for (const std::string_view marker : {"queued as ", "id=", "qp "}) {
      if (const auto id = id_after(line, marker); !id.empty()) return std::string(id);
    }
    if (const auto at = line.find(" Message accepted"); at != std::string_view::npos && at > 0) {
      if (const auto id = id_at(line, 0); id.size() == at) return std::string(id);
    }
  }
  return {};
}

void ensure_enhanced_codes(reply& r) {
  const int reply_class = r.reply_class();
  // RFC 2034 section 3: codes accompany 2xx, 4xx and 5xx replies only.
  if (reply_class != 2 && reply_class != 4 && reply_class != 5) return;
  const std::string prefix = std::to_string(reply_class) + ".0.0";
  if (r.lines.empty()) r.lines.emplace_back();
  for (auto& line : r.lines) {
    if (!leading_enhanced_code(line, reply_class).empty()) continue;
    line = line.empty() ? prefix : prefix + ' ' + line;
  }
}

reply_parser::reply_parser(std::size_t max_lines, std::size_t max_line_length)
    : max_lines_(max_lines), max_line_length_(max_line_length) {}

reply_parser::status reply_parser::feed(std::string_view line) {
  if (state_ != status::need_more) return state_ = status::bad;
  state_ = status::bad;
  if (line.size() > max_line_length_ || line.size() < 3) return state_;
  if (line[0] < '2' || line[0] > '5' || !is_digit(line[1]) || !is_digit(line[2])) return state_;
  const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (!current_.lines.empty() && code != current_.code) return state_;
  if (current_.lines.size() >= max_lines_) return state_;
  const bool last = line.size() == 3 || line[3] == ' ';
  if (!last && line[3] != '-') return state_;
  const std::string_view text = line.size() > 3 ? line.substr(4) : std::string_view{};
  if (!printable_text(text)) return state_;

  current_.code = code;
  // A lone "NNN" stays without text lines so it serializes back unchanged.
  if (!(last && line.size() == 3 && current_.lines.empty())) current_.lines.emplace_back(text);
  state_ = last ? status::done : status::need_more;
  return state_;
}

reply reply_parser::take() {
  reply out = std::move(current_);
  reset();
  return out;
}

void reply_parser::reset() {
  current_ = reply{};
  state_ = status::need_more;
}

}  // namespace smtpguard::smtp
