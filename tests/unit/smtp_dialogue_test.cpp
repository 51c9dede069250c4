#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "smtp/dialogue.hpp"
#include "smtp/replies.hpp"

namespace smtpguard::smtp {
namespace {

// Listeners as client_session configures them.
dialogue_policy submission() {  // starttls, require_tls
  dialogue_policy p;
  p.starttls_listener = true;
  p.require_tls = true;
  p.mechanisms = {"PLAIN", "LOGIN"};
  p.max_recipients = 3;
  return p;
}
dialogue_policy opportunistic() {  // starttls, TLS optional, no plaintext AUTH
  dialogue_policy p = submission();
  p.require_tls = false;
  return p;
}
dialogue_policy trusted() {  // tls none, plaintext AUTH allowed
  dialogue_policy p = opportunistic();
  p.starttls_listener = false;
  p.allow_plaintext_auth = true;
  return p;
}
dialogue_policy smtps() {  // implicit TLS
  dialogue_policy p = submission();
  p.starttls_listener = false;
  return p;
}
dialogue_policy no_tls_listener() {  // tls none, plaintext AUTH not allowed
  dialogue_policy p = trusted();
  p.allow_plaintext_auth = false;
  return p;
}

dialogue_policy strict_but_allowing() {  // require_tls wins over allow_plaintext_auth
  dialogue_policy p = submission();
  p.allow_plaintext_auth = true;
  return p;
}

dialogue_state fresh() { return {}; }
dialogue_state greeted() {
  dialogue_state s;
  s.greeted = true;
  s.extended = true;
  s.helo = "client.example";
  return s;
}
dialogue_state secure() {
  dialogue_state s = greeted();
  s.tls = true;
  return s;
}
dialogue_state fresh_tls() {
  dialogue_state s;
  s.tls = true;
  return s;
}
dialogue_state authenticated(bool tls = true) {
  dialogue_state s = greeted();
  s.tls = tls;
  s.authenticated = true;
  s.user = "alice";
  return s;
}
// A transaction without AUTH, as relay authorized another way would have one.
dialogue_state unauthenticated_transaction() {
  dialogue_state s = secure();
  s.in_transaction = true;
  return s;
}
dialogue_state transaction(int recipients, bool tls = true) {
  dialogue_state s = authenticated(tls);
  s.in_transaction = true;
  s.recipients = recipients;
  return s;
}

struct decide_case {
  std::string label;
  dialogue_state state;
  dialogue_policy policy;
  std::string line;
  effect what;
  std::string reply;  ///< expected reply prefix ("530 5.7.0"); empty: no reply text
  bool error;
};

void check(const std::vector<decide_case>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label + ": " + c.line);
    const decision d = decide(c.state, c.policy, parse_command(c.line));
    EXPECT_EQ(d.what, c.what);
    EXPECT_EQ(d.counts_as_error, c.error);
    if (c.reply.empty()) {
      EXPECT_TRUE(d.reply.empty()) << d.reply;
    } else {
      EXPECT_TRUE(d.reply.starts_with(c.reply)) << d.reply;
      EXPECT_TRUE(d.reply.ends_with("\r\n")) << d.reply;
    }
  }
}

TEST(smtp_dialogue, helo_and_ehlo) {
  check({
      {"ehlo", fresh(), submission(), "EHLO client.example", effect::greet, "", false},
      {"helo", fresh(), submission(), "HELO client.example", effect::greet, "", false},
      {"ehlo again", transaction(1), submission(), "ehlo x", effect::greet, "", false},
      {"ehlo no domain", fresh(), submission(), "EHLO", effect::reply, "501 5.5.4", true},
      {"helo no domain", greeted(), submission(), "HELO   ", effect::reply, "501 5.5.4", true},
  });
}

TEST(smtp_dialogue, starttls) {
  check({
      {"plaintext", greeted(), submission(), "STARTTLS", effect::start_tls, "220 2.0.0", false},
      {"before ehlo", fresh(), opportunistic(), "starttls", effect::start_tls, "220 2.0.0", false},
      {"tls active", secure(), submission(), "STARTTLS", effect::reply, "503 5.5.1", true},
      {"implicit tls", secure(), smtps(), "STARTTLS", effect::reply, "503 5.5.1", true},
      {"no starttls listener", greeted(), trusted(), "STARTTLS", effect::reply, "502 5.5.1", true},
      {"argument", greeted(), submission(), "STARTTLS now", effect::reply, "501 5.5.4", true},
  });
  const decision d = decide(greeted(), submission(), parse_command("STARTTLS"));
  EXPECT_EQ(d.reply, "220 2.0.0 Ready to start TLS\r\n");
}

TEST(smtp_dialogue, auth) {
  check({
      {"before ehlo", fresh_tls(), submission(), "AUTH PLAIN", effect::reply, "503 5.5.1", true},
      {"plaintext, require_tls", greeted(), submission(), "AUTH PLAIN", effect::reply, "530 5.7.0", true},
      {"plaintext, not allowed", greeted(), opportunistic(), "AUTH PLAIN", effect::reply, "530 5.7.0", true},
      {"plaintext, require_tls, allowed", greeted(), strict_but_allowing(), "AUTH PLAIN", effect::reply,
       "530 5.7.0", true},
      {"plaintext, allowed", greeted(), trusted(), "AUTH PLAIN", effect::authenticate, "", false},
      {"no TLS listener, not allowed", greeted(), no_tls_listener(), "AUTH PLAIN", effect::reply, "538 5.7.11",
       true},
      {"over tls", secure(), submission(), "AUTH PLAIN dGVzdA==", effect::authenticate, "", false},
      {"over tls, optional", secure(), opportunistic(), "auth login", effect::authenticate, "", false},
      {"implicit tls", secure(), smtps(), "AUTH CRAM-MD5", effect::authenticate, "", false},
      {"already", authenticated(), submission(), "AUTH PLAIN", effect::reply, "503 5.5.1", true},
      {"in transaction", unauthenticated_transaction(), submission(), "AUTH PLAIN", effect::reply, "503 5.5.1",
       true},
      {"authenticated, in transaction", transaction(0), submission(), "AUTH PLAIN", effect::reply, "503 5.5.1",
       true},
      {"no mechanism", secure(), submission(), "AUTH", effect::reply, "501 5.5.4", true},
  });
  const decision d = decide(greeted(), opportunistic(), parse_command("AUTH PLAIN"));
  EXPECT_EQ(d.reply, "530 5.7.0 Must issue a STARTTLS command first\r\n");
  EXPECT_EQ(decide(authenticated(), submission(), parse_command("AUTH PLAIN")).reply, replies::auth_already);
  EXPECT_EQ(decide(unauthenticated_transaction(), submission(), parse_command("AUTH PLAIN")).reply,
            replies::auth_in_transaction);
}

TEST(smtp_dialogue, mail) {
  check({
      {"before ehlo", fresh_tls(), submission(), "MAIL FROM:<a@b.c>", effect::reply, "503 5.5.1", true},
      {"before starttls", greeted(), submission(), "MAIL FROM:<a@b.c>", effect::reply, "530 5.7.0", true},
      {"before auth", secure(), submission(), "MAIL FROM:<a@b.c>", effect::reply, "530 5.7.0", true},
      {"before auth, plaintext", greeted(), trusted(), "MAIL FROM:<a@b.c>", effect::reply, "530 5.7.0", true},
      {"authenticated", authenticated(), submission(), "MAIL FROM:<a@b.c>", effect::mail, "", false},
      {"plaintext auth", authenticated(false), trusted(), "MAIL FROM:<>", effect::mail, "", false},
      {"nested", transaction(1), submission(), "MAIL FROM:<a@b.c>", effect::reply, "503 5.5.1", true},
  });
  EXPECT_EQ(decide(greeted(), submission(), parse_command("MAIL FROM:<a@b.c>")).reply, replies::must_starttls);
  EXPECT_EQ(decide(secure(), submission(), parse_command("MAIL FROM:<a@b.c>")).reply,
            "530 5.7.0 Authentication required\r\n");
  EXPECT_EQ(decide(transaction(0), submission(), parse_command("MAIL FROM:<a@b.c>")).reply, replies::nested_mail);
}

TEST(smtp_dialogue, mail_from_a_trusted_network) {
  auto from_trusted = [](dialogue_policy p) {
    p.trusted_client = true;
    return p;
  };
  check({
      {"plaintext listener", greeted(), from_trusted(no_tls_listener()), "MAIL FROM:<a@b.c>", effect::mail, "", false},
      {"after starttls", secure(), from_trusted(submission()), "MAIL FROM:<a@b.c>", effect::mail, "", false},
      // The listener's own demand for TLS still holds.
      {"before starttls", greeted(), from_trusted(submission()), "MAIL FROM:<a@b.c>", effect::reply, "530 5.7.0",
       true},
      {"before ehlo", fresh_tls(), from_trusted(submission()), "MAIL FROM:<a@b.c>", effect::reply, "503 5.5.1", true},
  });
  // AUTH stays on offer: a trusted host may still say who sends.
  EXPECT_TRUE(auth_offered(secure(), from_trusted(submission())));
}

TEST(smtp_dialogue, mail_on_an_mx_listener) {
  dialogue_policy mx = opportunistic();
  mx.mx = true;
  check({
      {"plaintext", greeted(), mx, "MAIL FROM:<a@b.c>", effect::mail, "", false},
      {"tls", secure(), mx, "MAIL FROM:<a@b.c>", effect::mail, "", false},
      {"before ehlo", fresh_tls(), mx, "MAIL FROM:<a@b.c>", effect::reply, "503 5.5.1", true},
  });
  // An MX that demands TLS (not RFC 3207's advice for a public one) still does.
  dialogue_policy strict = submission();
  strict.mx = true;
  EXPECT_EQ(decide(greeted(), strict, parse_command("MAIL FROM:<a@b.c>")).reply, replies::must_starttls);
}

TEST(smtp_dialogue, rcpt) {
  check({
      {"without mail", authenticated(), submission(), "RCPT TO:<x@y.z>", effect::reply, "503 5.5.1", true},
      {"first", transaction(0), submission(), "RCPT TO:<x@y.z>", effect::rcpt, "", false},
      {"last allowed", transaction(2), submission(), "RCPT TO:<x@y.z>", effect::rcpt, "", false},
      {"over the limit", transaction(3), submission(), "RCPT TO:<x@y.z>", effect::reply, "452 4.5.3", false},
  });
  EXPECT_EQ(decide(authenticated(), submission(), parse_command("RCPT TO:<x@y.z>")).reply, replies::need_mail);
}

TEST(smtp_dialogue, data) {
  check({
      {"without mail", authenticated(), submission(), "DATA", effect::reply, "503 5.5.1", true},
      {"no recipients", transaction(0), submission(), "DATA", effect::reply, "554 5.5.1", false},
      {"argument", transaction(1), submission(), "DATA now", effect::reply, "501 5.5.4", true},
      {"recipients", transaction(1), submission(), "data", effect::data, "", false},
  });
  EXPECT_EQ(decide(transaction(0), submission(), parse_command("DATA")).reply, replies::no_valid_recipients);
}

TEST(smtp_dialogue, eight_bit_octets_only_in_paths) {
  check({
      {"ehlo", fresh(), submission(), "EHLO h\xc3\xa9.example", effect::reply, "500 5.5.2", true},
      {"noop", authenticated(), submission(), "NOOP \xff", effect::reply, "500 5.5.2", true},
      {"verb", authenticated(), submission(), "N\xc3\x96OP", effect::reply, "500 5.5.2", true},
      {"auth", secure(), submission(), "AUTH PLAIN \xe9", effect::reply, "500 5.5.2", true},
      {"starttls", greeted(), submission(), "STARTTLS \xe9", effect::reply, "500 5.5.2", true},
      {"quit", greeted(), submission(), "QUIT \xe9", effect::reply, "500 5.5.2", true},
      // MAIL and RCPT paths are judged by the session once parsed (SMTPUTF8).
      {"mail", authenticated(), submission(), "MAIL FROM:<j\xc3\xb6rg@b.c> SMTPUTF8", effect::mail, "", false},
      {"rcpt", transaction(0), submission(), "RCPT TO:<j\xc3\xb6rg@b.c>", effect::rcpt, "", false},
  });
  EXPECT_EQ(decide(greeted(), submission(), parse_command("HELP \xe9")).reply, replies::bad_characters);
}

TEST(smtp_dialogue, other_verbs) {
  check({
      {"rset", fresh(), submission(), "RSET", effect::rset, "", false},
      {"rset in transaction", transaction(2), submission(), "RSET", effect::rset, "", false},
      {"rset argument", greeted(), submission(), "RSET all", effect::reply, "501 5.5.4", true},
      {"noop", fresh(), submission(), "NOOP", effect::noop, "", false},
      {"noop argument", transaction(1), submission(), "NOOP hello", effect::noop, "", false},
      {"quit", fresh(), submission(), "QUIT", effect::quit, "221 2.0.0", false},
      {"quit argument", greeted(), submission(), "QUIT now", effect::reply, "501 5.5.4", true},
      {"vrfy", greeted(), submission(), "VRFY bob", effect::reply, "252 2.5.0", false},
      {"vrfy no argument", greeted(), submission(), "VRFY", effect::reply, "501 5.5.4", true},
      {"help", fresh(), submission(), "HELP", effect::reply, "214-2.0.0", false},
      {"help topic", fresh(), submission(), "HELP MAIL", effect::reply, "214-2.0.0", false},
      {"expn", greeted(), submission(), "EXPN list", effect::reply, "502 5.5.1", true},
      {"bdat", transaction(1), submission(), "BDAT 10 LAST", effect::reply, "502 5.5.1", true},
      {"unknown", greeted(), submission(), "FROB", effect::reply, "500 5.5.2", true},
      {"glued", greeted(), submission(), "MAILFROM:<a@b.c>", effect::reply, "500 5.5.2", true},
      {"empty", greeted(), submission(), "", effect::reply, "500 5.5.2", true},
  });
  EXPECT_EQ(decide(fresh(), submission(), parse_command("QUIT")).reply, replies::bye);
  EXPECT_EQ(decide(fresh(), submission(), parse_command("HELP")).reply, replies::help);
}

struct offer_case {
  std::string label;
  dialogue_state state;
  dialogue_policy policy;
  bool auth;
  bool starttls;
};

TEST(smtp_dialogue, advertised) {
  dialogue_policy no_mechanisms = trusted();
  no_mechanisms.mechanisms.clear();
  const std::vector<offer_case> cases{
      {"submission, plaintext", greeted(), submission(), false, true},
      {"submission, tls", secure(), submission(), true, false},
      {"opportunistic, plaintext", greeted(), opportunistic(), false, true},
      {"opportunistic, tls", secure(), opportunistic(), true, false},
      {"require_tls beats allow", greeted(), strict_but_allowing(), false, true},
      {"trusted, plaintext", greeted(), trusted(), true, false},
      {"trusted, authenticated", authenticated(false), trusted(), false, false},
      {"smtps", secure(), smtps(), true, false},
      {"smtps, authenticated", authenticated(), smtps(), false, false},
      {"no mechanisms", secure(), no_mechanisms, false, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    EXPECT_EQ(auth_offered(c.state, c.policy), c.auth);
    EXPECT_EQ(starttls_offered(c.state, c.policy), c.starttls);
  }
}

TEST(smtp_dialogue, after_starttls_keeps_only_tls) {
  const dialogue_state s = after_starttls();
  EXPECT_TRUE(s.tls);
  EXPECT_FALSE(s.greeted);
  EXPECT_FALSE(s.extended);
  EXPECT_TRUE(s.helo.empty());
  EXPECT_FALSE(s.authenticated);
  EXPECT_TRUE(s.user.empty());
  EXPECT_FALSE(s.in_transaction);
  EXPECT_EQ(s.recipients, 0);
  // RFC 3207 section 4.2: EHLO is required again, and STARTTLS is not offered twice.
  EXPECT_EQ(decide(s, submission(), parse_command("MAIL FROM:<a@b.c>")).reply, replies::send_helo_first);
  EXPECT_EQ(decide(s, submission(), parse_command("AUTH PLAIN")).reply, replies::send_helo_first);
  EXPECT_FALSE(starttls_offered(s, submission()));
  EXPECT_EQ(decide(s, submission(), parse_command("STARTTLS")).reply, replies::tls_already_active);
}

}  // namespace
}  // namespace smtpguard::smtp
