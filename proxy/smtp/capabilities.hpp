#pragma once
// ESMTP capabilities: what the backend offers, and what we offer the client.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/reply.hpp"

namespace smtpguard::smtp {

/// Extensions found in a backend's EHLO reply (keywords matched case-insensitively).
struct capabilities {
  bool pipelining = false;
  bool eightbitmime = false;
  bool enhanced_status_codes = false;
  bool smtputf8 = false;
  bool dsn = false;
  bool chunking = false;
  bool starttls = false;
  bool xclient = false;
  std::vector<std::string> xclient_attributes;  ///< upper-cased: ADDR, PORT, LOGIN, ...
  bool size = false;
  std::uint64_t size_limit = 0;  ///< SIZE argument; 0 = none announced
  std::vector<std::string> auth_mechanisms;  ///< upper-cased
};

/// Parses a 250 EHLO reply (first line is the greeting, not a keyword).
capabilities parse_ehlo(const reply& ehlo);

/// What smtpguard itself decides to offer in this session state.
struct ehlo_offer {
  std::string_view hostname;        ///< our name, first line "hostname"
  std::string_view client_name;     ///< EHLO argument, echoed in the greeting line
  bool starttls = false;            ///< plaintext on a STARTTLS listener
  std::vector<std::string_view> auth_mechanisms;  ///< empty: no AUTH line
  std::uint64_t max_message_size = 0;  ///< our limit; 0 = none
};

/// Builds our 250 EHLO reply: "<hostname> Hello <client_name>", then
/// PIPELINING and ENHANCEDSTATUSCODES (we implement both ourselves), SIZE
/// (the smaller non-zero of ours and the backend's), 8BITMIME, SMTPUTF8, DSN
/// (only when the backend has them), STARTTLS and AUTH from the offer. Never
/// CHUNKING, XCLIENT or the backend's own AUTH/STARTTLS.
reply build_ehlo_reply(const capabilities& backend, const ehlo_offer& offer);

}  // namespace smtpguard::smtp
