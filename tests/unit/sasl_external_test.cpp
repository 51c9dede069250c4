// SASL EXTERNAL (RFC 4422 appendix A) over SMTP AUTH (RFC 4954).
#include <gtest/gtest.h>

#include "sasl/exchange.hpp"

namespace smtpguard::sasl {
namespace {

std::string authzid_of(const server_exchange& exchange) {
  return std::get<external_proof>(exchange.credentials()).user;
}

TEST(sasl_external, empty_initial_response_means_the_certificate_identity) {
  server_exchange exchange(mechanism::external);
  EXPECT_EQ(exchange.start("=", true).what, step::kind::complete);
  EXPECT_EQ(authzid_of(exchange), "");
}

TEST(sasl_external, initial_response_names_the_authorization_identity) {
  server_exchange exchange(mechanism::external);
  EXPECT_EQ(exchange.start("YWxpY2U=", true).what, step::kind::complete);  // "alice"
  EXPECT_EQ(authzid_of(exchange), "alice");
}

TEST(sasl_external, without_initial_response_an_empty_challenge_comes_first) {
  server_exchange exchange(mechanism::external);
  const step first = exchange.start({}, false);
  EXPECT_EQ(first.what, step::kind::challenge);
  EXPECT_EQ(first.text, "");
  EXPECT_EQ(exchange.respond("").what, step::kind::complete);
  EXPECT_EQ(authzid_of(exchange), "");
}

TEST(sasl_external, cancel_and_garbage) {
  server_exchange cancelled(mechanism::external);
  cancelled.start({}, false);
  EXPECT_EQ(cancelled.respond("*").what, step::kind::cancelled);
  server_exchange garbage(mechanism::external);
  EXPECT_EQ(garbage.start("!!!", true).what, step::kind::malformed);
  server_exchange with_nul(mechanism::external);
  EXPECT_EQ(with_nul.start("YQBi", true).what, step::kind::malformed);  // "a\0b"
}

TEST(sasl_external, mechanism_name_round_trips) {
  EXPECT_EQ(parse_mechanism("external"), mechanism::external);
  EXPECT_EQ(mechanism_name(mechanism::external), "EXTERNAL");
}

}  // namespace
}  // namespace smtpguard::sasl
