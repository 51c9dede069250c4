#include <gtest/gtest.h>

#include <string_view>

#include "smtp/replies.hpp"

namespace smtpguard::smtp::replies {
namespace {

TEST(smtp_replies, every_reply_is_one_crlf_terminated_line_or_a_multiline_reply) {
  for (const std::string_view r : {ok, bye, auth_required, message_too_big, bare_line_ending, backend_bad_reply}) {
    EXPECT_TRUE(r.ends_with("\r\n")) << r;
    EXPECT_EQ(r.find("\r\n"), r.size() - 2) << r;
  }
}

TEST(smtp_replies, policy_refusals_have_a_reason) {
  EXPECT_EQ(rejection_reason(auth_required), "relay_denied");
  EXPECT_EQ(rejection_reason(sender_not_owned), "sender_mismatch");
  EXPECT_EQ(rejection_reason(message_too_big), "message_size");
  EXPECT_EQ(rejection_reason(too_many_recipients), "recipients");
  EXPECT_EQ(rejection_reason(data_too_slow), "rate_limit");
  EXPECT_EQ(rejection_reason(bare_line_ending), "smuggling");
  EXPECT_EQ(rejection_reason(line_too_long), "line_too_long");
  EXPECT_EQ(rejection_reason(bad_characters), "bad_characters");
}

TEST(smtp_replies, other_replies_are_not_rejections) {
  EXPECT_EQ(rejection_reason(ok), "");
  EXPECT_EQ(rejection_reason(backend_failed), "");
  // A backend reply relayed verbatim, even one that looks like ours in part.
  EXPECT_EQ(rejection_reason("552 5.3.4 Message size exceeds fixed limit (backend)\r\n"), "");
  EXPECT_EQ(rejection_reason(""), "");
}

}  // namespace
}  // namespace smtpguard::smtp::replies
