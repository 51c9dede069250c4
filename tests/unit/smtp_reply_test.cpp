#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "smtp/reply.hpp"

namespace smtpguard::smtp {
namespace {

using status = reply_parser::status;

TEST(smtp_reply, serialize) {
  EXPECT_EQ(make_reply(250, "2.0.0 OK").serialize(), "250 2.0.0 OK\r\n");
  EXPECT_EQ((reply{250, {"a", "b"}}).serialize(), "250-a\r\n250 b\r\n");
  EXPECT_EQ((reply{354, {}}).serialize(), "354\r\n");
}

TEST(smtp_reply, enhanced_code) {
  const std::vector<std::pair<reply, std::string>> cases{
      {make_reply(250, "2.1.0 Ok"), "2.1.0"},
      {make_reply(250, "2.1.0"), "2.1.0"},
      {make_reply(550, "5.123.456 No"), "5.123.456"},
      {make_reply(451, "4.4.1 try later"), "4.4.1"},
      {make_reply(250, "5.1.0 wrong class"), ""},
      {make_reply(250, "2.1234.0 too long"), ""},
      {make_reply(250, "2.1.0000 too long"), ""},
      {make_reply(250, "2.1.0x"), ""},
      {make_reply(250, "2..0 x"), ""},
      {make_reply(250, "2.1. x"), ""},
      {make_reply(250, "Ok"), ""},
      {make_reply(354, "3.0.0 go"), ""},
      {reply{250, {}}, ""},
  };
  for (const auto& [r, code] : cases) EXPECT_EQ(r.enhanced_code(), code) << r.serialize();
}

TEST(smtp_reply, ensure_enhanced_codes) {
  reply r{250, {"mail.example Hello", "2.0.0 already", "", "SIZE 10"}};
  ensure_enhanced_codes(r);
  EXPECT_EQ(r.lines, (std::vector<std::string>{"2.0.0 mail.example Hello", "2.0.0 already", "2.0.0",
                                               "2.0.0 SIZE 10"}));
  reply failure = make_reply(554, "4.0.0 wrong class kept as text");
  ensure_enhanced_codes(failure);
  EXPECT_EQ(failure.lines.front(), "5.0.0 4.0.0 wrong class kept as text");
  reply data = make_reply(354, "go ahead");
  ensure_enhanced_codes(data);
  EXPECT_EQ(data.lines.front(), "go ahead");
  reply bare{421, {}};
  ensure_enhanced_codes(bare);
  EXPECT_EQ(bare.serialize(), "421 4.0.0\r\n");
}

struct parse_case {
  std::vector<std::string> lines;
  status final_status;
  int code = 0;
  std::vector<std::string> texts;
};

TEST(smtp_reply, parser_table) {
  const std::vector<parse_case> cases{
      {{"250 OK"}, status::done, 250, {"OK"}},
      {{"250"}, status::done, 250, {}},
      {{"250-mail.example", "250-PIPELINING", "250 SIZE 1000"}, status::done, 250,
       {"mail.example", "PIPELINING", "SIZE 1000"}},
      {{"250-", "250 x"}, status::done, 250, {"", "x"}},
      {{"220 h\xc3\xa9llo\tthere"}, status::done, 220, {"h\xc3\xa9llo\tthere"}},
      {{"550 5.1.1 <x@y>: Recipient address rejected"}, status::done, 550,
       {"5.1.1 <x@y>: Recipient address rejected"}},
      {{"25"}, status::bad, 0, {}},
      {{"2500 x"}, status::bad, 0, {}},
      {{"250x"}, status::bad, 0, {}},
      {{"150 x"}, status::bad, 0, {}},
      {{"650 x"}, status::bad, 0, {}},
      {{"25a x"}, status::bad, 0, {}},
      {{" 250 x"}, status::bad, 0, {}},
      {{"250-a", "251 b"}, status::bad, 0, {}},
      {{"250-a", "250 b\x01"}, status::bad, 0, {}},
      {{"250 a\x7f"}, status::bad, 0, {}},
      {{"250 a\rb"}, status::bad, 0, {}},
      {{std::string("250 a\0b", 7)}, status::bad, 0, {}},
      {{"250-a"}, status::need_more, 0, {}},
  };
  for (const auto& c : cases) {
    reply_parser parser;
    status s = status::need_more;
    for (const auto& line : c.lines) s = parser.feed(line);
    EXPECT_EQ(s, c.final_status) << testing::PrintToString(c.lines);
    if (s == status::done) {
      const reply r = parser.take();
      EXPECT_EQ(r.code, c.code);
      EXPECT_EQ(r.lines, c.texts);
    }
  }
}

TEST(smtp_reply, parser_limits_and_reuse) {
  reply_parser parser(3, 10);
  EXPECT_EQ(parser.feed("250-a"), status::need_more);
  EXPECT_EQ(parser.feed("250-b"), status::need_more);
  EXPECT_EQ(parser.feed("250-c"), status::need_more);
  EXPECT_EQ(parser.feed("250 d"), status::bad);
  EXPECT_EQ(parser.feed("250 e"), status::bad);  // stays bad until reset
  parser.reset();
  EXPECT_EQ(parser.feed("250 012345"), status::done);
  EXPECT_EQ(parser.feed("250 x"), status::bad);  // done needs take() first
  parser.reset();
  EXPECT_EQ(parser.feed("250 0123456"), status::bad);
  parser.reset();
  EXPECT_EQ(parser.feed("354 go"), status::done);
  EXPECT_EQ(parser.take().serialize(), "354 go\r\n");
  EXPECT_EQ(parser.feed("221 bye"), status::done);
  EXPECT_EQ(parser.take().code, 221);
}

TEST(smtp_reply, parsed_reply_round_trips) {
  const std::vector<std::string> lines{"250-mail.example", "250-8BITMIME", "250 DSN"};
  reply_parser parser;
  for (const auto& line : lines) parser.feed(line);
  EXPECT_EQ(parser.take().serialize(), "250-mail.example\r\n250-8BITMIME\r\n250 DSN\r\n");
}

}  // namespace
}  // namespace smtpguard::smtp

namespace smtpguard::smtp {
namespace {

TEST(smtp_reply, queue_id_of_each_mta) {
  EXPECT_EQ(queue_id(make_reply(250, "2.0.0 Ok: queued as 4Fxyz1Kq2z")), "4Fxyz1Kq2z");             // Postfix
  EXPECT_EQ(queue_id(make_reply(250, "2.0.0 5AMLp3Xk012345 Message accepted for delivery")),  // sendmail
            "5AMLp3Xk012345");
  EXPECT_EQ(queue_id(make_reply(250, "OK id=1qXyZ1-000123-AB")), "1qXyZ1-000123-AB");          // Exim
  EXPECT_EQ(queue_id(make_reply(250, "ok 1700000000 qp 12345")), "12345");                     // qmail
  EXPECT_EQ(queue_id(make_reply(250, "OK: queued as rec000001")), "rec000001");
  EXPECT_EQ(queue_id(make_reply(250, "2.0.0 Ok")), "");
  EXPECT_EQ(queue_id(make_reply(250, "Message accepted")), "");
  EXPECT_EQ(queue_id(make_reply(250, "queued as " + std::string(80, 'x'))), "");  // not an id
}

}  // namespace
}  // namespace smtpguard::smtp
