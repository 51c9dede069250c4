#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/passwords.hpp"
#include "auth/user_db.hpp"

namespace smtpguard::auth {
namespace {

struct result {
  int code = -1;
  std::string out;
  std::string err;
};

result run(std::vector<std::string> args, const std::string& input) {
  args.insert(args.begin(), "passwd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::istringstream in(input);
  std::ostringstream out;
  std::ostringstream err;
  result r;
  r.code = run_passwd_command(static_cast<int>(args.size()), argv.data(), in, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST(auth_passwd_command, default_entry_verifies) {
  const result r = run({}, "secret phrase\r\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_TRUE(r.out.ends_with("\n"));
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line";
  const auto entry = nlohmann::json::parse(r.out);
  EXPECT_EQ(entry.size(), 3u);
  EXPECT_EQ(entry.at("name"), "user");
  EXPECT_TRUE(entry.at("password").get<std::string>().starts_with("$y$"));
  EXPECT_EQ(r.out.find("{\"name\""), 0u) << "name comes first";

  // The printed entry is a valid users-file entry as it stands.
  const user_db db = user_db::parse(nlohmann::json{{"users", {entry}}});
  EXPECT_TRUE(db.verify_password("user", "secret phrase"));
  EXPECT_FALSE(db.verify_password("user", "secret phrase\r"));
  const auto digest = cram_md5_digest(*cram_md5_context_from_hex(entry.at("cram_md5").get<std::string>()),
                                      "<4874.1007276777@asao.gcd.org>");
  std::string digest_bytes(digest.begin(), digest.end());
  EXPECT_TRUE(db.verify_cram_md5("user", "<4874.1007276777@asao.gcd.org>", digest_bytes));
  EXPECT_EQ(digest_bytes, "\x56\x2e\xae\xac\xde\x6c\x42\x33\xd6\x3c\x66\xb1\xd2\x68\xf5\x86");
}

TEST(auth_passwd_command, scheme_and_user_options) {
  const result r = run({"--scheme", "sha512-crypt", "--user=sengoku"}, "secret phrase\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto entry = nlohmann::json::parse(r.out);
  EXPECT_EQ(entry.at("name"), "sengoku");
  const std::string hash = entry.at("password");
  EXPECT_TRUE(hash.starts_with("$6$")) << hash;
  EXPECT_TRUE(verify_password_hash("secret phrase", hash));
  EXPECT_EQ(entry.at("cram_md5"), cram_md5_context_to_hex(make_cram_md5_context("secret phrase")));
}

TEST(auth_passwd_command, reads_only_the_first_line) {
  const result r = run({"--scheme=sha512-crypt"}, "first\nsecond\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(verify_password_hash("first", nlohmann::json::parse(r.out).at("password").get<std::string>()));
}

TEST(auth_passwd_command, help) {
  const result r = run({"--help"}, "");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(r.out.starts_with("usage: smtpguard passwd")) << r.out;
}

TEST(auth_passwd_command, usage_errors) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--scheme", "md5"}, {"--scheme"}, {"--user"}, {"--user", ""}, {"--bogus"}, {"extra"}, {"--help=1"}}) {
    const result r = run(args, "secret phrase\n");
    EXPECT_EQ(r.code, 2) << args.front();
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err.find("usage:"), std::string::npos) << r.err;
  }
}

TEST(auth_passwd_command, refuses_empty_or_missing_password) {
  for (const char* input : {"", "\n", "\r\n"}) {
    const result r = run({}, input);
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err, "");
  }
}

}  // namespace
}  // namespace smtpguard::auth
