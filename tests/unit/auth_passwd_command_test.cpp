#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/passwords.hpp"
#include "auth/scram_secret.hpp"
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
  EXPECT_EQ(entry.size(), 4u);
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

  // The SCRAM secret is the one the password derives with the printed salt.
  const std::string scram_text = entry.at("scram_sha256");
  const auto scram = scram_secret_from_text(scram_text);
  ASSERT_TRUE(scram) << scram_text;
  EXPECT_TRUE(scram_text.starts_with("SCRAM-SHA-256$4096:")) << scram_text;
  const scram_secret expected = make_scram_secret("secret phrase", scram->salt, scram->iterations);
  EXPECT_EQ(scram->stored_key, expected.stored_key);
  EXPECT_EQ(scram->server_key, expected.server_key);
  EXPECT_EQ(db.scram_secret_for("user").stored_key, expected.stored_key);
}

TEST(auth_passwd_command, scram_secret_of_the_saslprepped_password) {
  // U+00AA is NFKC "a", the form clients derive their proof from.
  const result r = run({"--scram-iterations=5000"}, "p\xC2\xAAss\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto scram = scram_secret_from_text(nlohmann::json::parse(r.out).at("scram_sha256").get<std::string>());
  ASSERT_TRUE(scram);
  EXPECT_EQ(scram->iterations, 5000u);
  EXPECT_EQ(scram->stored_key, make_scram_secret("pass", scram->salt, 5000).stored_key);
}

TEST(auth_passwd_command, digest_md5_secret_only_with_a_realm) {
  EXPECT_FALSE(nlohmann::json::parse(run({}, "secret\n").out).contains("digest_md5"));
  const result r = run({"--user", "chris", "--realm", "elwood.innosoft.com", "--scheme=sha512-crypt"}, "secret\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto entry = nlohmann::json::parse(r.out);
  // MD5("chris:elwood.innosoft.com:secret"), RFC 2831's example user.
  EXPECT_EQ(entry.at("digest_md5"), "eb5a750053e4d2c34aa84bbc9b0b6ee7");
  const user_db db = user_db::parse(nlohmann::json{{"users", {entry}}});
  const auto secret = db.digest_md5_secret_for("chris");
  EXPECT_EQ(secret[0], 0xeb);
  EXPECT_EQ(secret[15], 0xe7);
}

TEST(auth_passwd_command, no_scram_secret_for_a_password_saslprep_prohibits) {
  const result r = run({}, "bell\x07\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto entry = nlohmann::json::parse(r.out);
  EXPECT_FALSE(entry.contains("scram_sha256"));
  EXPECT_TRUE(entry.contains("password"));
  EXPECT_NE(r.err.find("SASLprep"), std::string::npos) << r.err;
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
           {"--scheme", "md5"}, {"--scheme"}, {"--user"}, {"--user", ""}, {"--bogus"}, {"extra"}, {"--help=1"},
           {"--scram-iterations", "4095"}, {"--scram-iterations=10000001"}, {"--scram-iterations=4096x"},
           {"--scram-iterations"}, {"--realm"}, {"--realm="}}) {
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
