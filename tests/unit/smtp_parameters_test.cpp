#include <gtest/gtest.h>

#include <initializer_list>
#include <string_view>

#include "smtp/parameters.hpp"

namespace smtpguard::smtp {
namespace {

capabilities plain_backend() { return {}; }

capabilities full_backend() {
  capabilities c;
  c.eightbitmime = true;
  c.smtputf8 = true;
  c.dsn = true;
  return c;
}

path_argument mail(std::string_view argument) {
  auto path = parse_mail_from(argument);
  EXPECT_TRUE(path) << argument;
  return path ? *path : path_argument{};
}

path_argument rcpt(std::string_view argument) {
  auto path = parse_rcpt_to(argument);
  EXPECT_TRUE(path) << argument;
  return path ? *path : path_argument{};
}

// Each argument against a backend that advertised nothing and one that
// advertised 8BITMIME, SMTPUTF8 and DSN.
struct row {
  std::string_view argument;
  bool plain;
  bool full;
};

void check(std::initializer_list<row> rows, bool is_mail) {
  for (const auto& r : rows) {
    const path_argument path = is_mail ? mail(r.argument) : rcpt(r.argument);
    EXPECT_EQ(parameters_supported(path, plain_backend(), is_mail), r.plain) << r.argument;
    EXPECT_EQ(parameters_supported(path, full_backend(), is_mail), r.full) << r.argument;
  }
}

TEST(smtp_parameters, mail_parameters_by_backend) {
  check({{"FROM:<a@example.org>", true, true},
         {"FROM:<a@example.org> SIZE=1000", true, true},
         {"FROM:<a@example.org> BODY=7BIT", true, true},
         {"FROM:<a@example.org> BODY=7bit", true, true},
         {"FROM:<a@example.org> BODY=8BITMIME", false, true},
         {"FROM:<a@example.org> BODY=8BitMIME", false, true},
         {"FROM:<a@example.org> BODY=BINARYMIME", false, false},
         {"FROM:<a@example.org> SMTPUTF8", false, true},
         {"FROM:<a@example.org> SMTPUTF8=yes", false, false},
         {"FROM:<a@example.org> RET=HDRS ENVID=abc", false, true},
         {"FROM:<a@example.org> NOTIFY=NEVER", false, false},
         {"FROM:<a@example.org> XUNKNOWN=1", false, false},
         {"FROM:<a@example.org> SIZE=10 XUNKNOWN", false, false}},
        true);
}

TEST(smtp_parameters, rcpt_parameters_by_backend) {
  check({{"TO:<b@example.net>", true, true},
         {"TO:<b@example.net> NOTIFY=SUCCESS,FAILURE", false, true},
         {"TO:<b@example.net> ORCPT=rfc822;b@example.net", false, true},
         // MAIL FROM's parameters mean nothing on RCPT TO
         {"TO:<b@example.net> SIZE=10", false, false},
         {"TO:<b@example.net> BODY=7BIT", false, false},
         {"TO:<b@example.net> RET=FULL", false, false}},
        false);
}

TEST(smtp_parameters, has_parameter_matches_keywords_in_any_case) {
  const auto path = mail("FROM:<a@example.org> smtputf8 size=5");
  EXPECT_TRUE(has_parameter(path, "SMTPUTF8"));
  EXPECT_TRUE(has_parameter(path, "SIZE"));
  EXPECT_FALSE(has_parameter(path, "BODY"));
}

TEST(smtp_parameters, auth_parameter_is_removed_and_the_rest_kept) {
  auto path = mail("FROM:<a@example.org> SIZE=5 auth=<> BODY=7BIT");
  strip_auth_parameter(path);
  ASSERT_EQ(path.parameters.size(), 2u);
  EXPECT_EQ(path.parameters[0].keyword, "SIZE");
  EXPECT_EQ(path.parameters[1].keyword, "BODY");
  EXPECT_TRUE(parameters_supported(path, plain_backend(), true));
}

}  // namespace
}  // namespace smtpguard::smtp
