#include "smtp/capabilities.hpp"

#include <algorithm>
#include <charconv>

#include "smtp/chars.hpp"

namespace smtpguard::smtp {
namespace {

// Space-separated keywords, upper-cased, each once.
void add_keywords(std::string_view list, std::vector<std::string>& out) {
  while (!list.empty()) {
    const auto space = list.find(' ');
    const std::string_view item = list.substr(0, space);
    list = space == std::string_view::npos ? std::string_view{} : list.substr(space + 1);
    if (item.empty()) continue;
    std::string mechanism = to_upper(item);
    if (std::find(out.begin(), out.end(), mechanism) == out.end()) out.push_back(std::move(mechanism));
  }
}

// The EHLO greeting line echoes client text: keep it to one printable line.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u > 0x20 && u != 0x7f) out += c;
  }
  return out;
}

}  // namespace

capabilities parse_ehlo(const reply& ehlo) {
  capabilities caps;
  for (std::size_t i = 1; i < ehlo.lines.size(); ++i) {
    std::string_view line = ehlo.lines[i];
    // Pre-RFC 2554 servers announce "AUTH=PLAIN LOGIN" alongside or instead of "AUTH".
    if (line.size() >= 5 && iequals(line.substr(0, 5), "AUTH=")) {
      add_keywords(line.substr(5), caps.auth_mechanisms);
      continue;
    }
    const auto space = line.find(' ');
    const std::string_view keyword = line.substr(0, space);
    const std::string_view params =
        space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
    if (iequals(keyword, "PIPELINING")) {
      caps.pipelining = true;
    } else if (iequals(keyword, "8BITMIME")) {
      caps.eightbitmime = true;
    } else if (iequals(keyword, "ENHANCEDSTATUSCODES")) {
      caps.enhanced_status_codes = true;
    } else if (iequals(keyword, "SMTPUTF8")) {
      caps.smtputf8 = true;
    } else if (iequals(keyword, "DSN")) {
      caps.dsn = true;
    } else if (iequals(keyword, "CHUNKING")) {
      caps.chunking = true;
    } else if (iequals(keyword, "STARTTLS")) {
      caps.starttls = true;
    } else if (iequals(keyword, "XCLIENT")) {
      caps.xclient = true;
      add_keywords(params, caps.xclient_attributes);
    } else if (iequals(keyword, "SIZE")) {
      caps.size = true;
      std::uint64_t limit = 0;
      const auto* end = params.data() + params.size();
      const auto [ptr, ec] = std::from_chars(params.data(), end, limit);
      caps.size_limit = (ec == std::errc{} && ptr == end) ? limit : 0;
    } else if (iequals(keyword, "AUTH")) {
      add_keywords(params, caps.auth_mechanisms);
    }
  }
  return caps;
}

reply build_ehlo_reply(const capabilities& backend, const ehlo_offer& offer) {
  reply r;
  r.code = 250;
  std::string greeting(offer.hostname);
  greeting += " Hello";
  if (const std::string name = printable(offer.client_name); !name.empty()) {
    greeting += ' ';
    greeting += name;
  }
  r.lines.push_back(std::move(greeting));
  r.lines.emplace_back("PIPELINING");

  const std::uint64_t ours = offer.max_message_size;
  const std::uint64_t theirs = backend.size_limit;
  const std::uint64_t limit = (ours != 0 && theirs != 0) ? std::min(ours, theirs) : std::max(ours, theirs);
  r.lines.push_back(limit == 0 ? std::string("SIZE") : "SIZE " + std::to_string(limit));

  if (backend.eightbitmime) r.lines.emplace_back("8BITMIME");
  if (backend.smtputf8) r.lines.emplace_back("SMTPUTF8");
  if (backend.dsn) r.lines.emplace_back("DSN");
  r.lines.emplace_back("ENHANCEDSTATUSCODES");
  if (offer.starttls) r.lines.emplace_back("STARTTLS");
  if (!offer.auth_mechanisms.empty()) {
    std::string auth = "AUTH";
    for (const auto mechanism : offer.auth_mechanisms) {
      auth += ' ';
      auth += mechanism;
    }
    r.lines.push_back(std::move(auth));
  }
  return r;
}

}  // namespace smtpguard::smtp
