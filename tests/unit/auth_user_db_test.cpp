#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "auth/passwords.hpp"
#include "auth/user_db.hpp"
#include "sasl/base64.hpp"
#include "sasl/exchange.hpp"

namespace smtpguard::auth {
namespace {

using json = nlohmann::json;

constexpr const char* seed_challenge = "<4874.1007276777@asao.gcd.org>";

// sha512-crypt at its default cost keeps these tests fast; the dummy hash
// made at parse time follows the first user's scheme.
const std::string& sengoku_hash() {
  static const std::string hash = hash_password("secret phrase", hash_scheme::sha512_crypt);
  return hash;
}

json seed_document() {
  return json{{"users",
               {{{"name", "sengoku"},
                 {"password", sengoku_hash()},
                 {"cram_md5", cram_md5_context_to_hex(make_cram_md5_context("secret phrase"))},
                 {"senders", {"sengoku@gcd.org", "@Example.ORG"}}},
                {{"name", "nopass"}, {"cram_md5", cram_md5_context_to_hex(make_cram_md5_context("other"))}},
                {{"name", "locked"}, {"password", "!" + sengoku_hash()}},
                {{"name", "anyone"}, {"password", sengoku_hash()}, {"senders", json::array()}}}}};
}

std::string parse_error(const json& document) {
  try {
    user_db::parse(document);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "no error";
}

TEST(auth_user_db, parses_records) {
  const user_db db = user_db::parse(seed_document());
  EXPECT_EQ(db.size(), 4u);
  const user_record* u = db.find("sengoku");
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->name, "sengoku");
  EXPECT_EQ(u->password_hash, sengoku_hash());
  ASSERT_TRUE(u->cram_md5.has_value());
  EXPECT_EQ(*u->cram_md5, make_cram_md5_context("secret phrase"));
  EXPECT_EQ(u->senders, (std::vector<std::string>{"sengoku@gcd.org", "@Example.ORG"}));
  const user_record* n = db.find("nopass");
  ASSERT_NE(n, nullptr);
  EXPECT_TRUE(n->password_hash.empty());
  EXPECT_EQ(db.find("Sengoku"), nullptr);
  EXPECT_EQ(db.find("nobody"), nullptr);
}

TEST(auth_user_db, empty_users_list) {
  const user_db db = user_db::parse(json{{"users", json::array()}});
  EXPECT_EQ(db.size(), 0u);
  EXPECT_FALSE(db.verify_password("anyone", "secret phrase"));
}

TEST(auth_user_db, verify_password) {
  const user_db db = user_db::parse(seed_document());
  EXPECT_TRUE(db.verify_password("sengoku", "secret phrase"));
  EXPECT_FALSE(db.verify_password("sengoku", "secret phrasE"));
  EXPECT_FALSE(db.verify_password("sengoku", ""));
  EXPECT_FALSE(db.verify_password("nobody", "secret phrase"));
  EXPECT_FALSE(db.verify_password("nopass", "other"));
  EXPECT_FALSE(db.verify_password("locked", "secret phrase"));
}

TEST(auth_user_db, plain_exchange_then_verify) {
  const user_db db = user_db::parse(seed_document());
  sasl::server_exchange x(sasl::mechanism::plain);
  ASSERT_EQ(x.start("AHNlbmdva3UAc2VjcmV0IHBocmFzZQ==", true).what, sasl::step::kind::complete);
  const auto& p = std::get<sasl::password_proof>(x.credentials());
  EXPECT_TRUE(db.verify_password(p.user, p.password));
}

TEST(auth_user_db, cram_md5_exchange_then_verify) {
  const user_db db = user_db::parse(seed_document());
  sasl::server_exchange x(sasl::mechanism::cram_md5, seed_challenge);
  const sasl::step first = x.start("", false);
  ASSERT_EQ(first.what, sasl::step::kind::challenge);
  EXPECT_EQ(first.text, sasl::base64_encode(seed_challenge));
  ASSERT_EQ(x.respond(sasl::base64_encode("sengoku 562eaeacde6c4233d63c66b1d268f586")).what,
            sasl::step::kind::complete);
  const auto& p = std::get<sasl::cram_md5_proof>(x.credentials());
  EXPECT_TRUE(db.verify_cram_md5(p.user, p.challenge, p.digest));
  // Same digest, other challenge or user: refused.
  EXPECT_FALSE(db.verify_cram_md5(p.user, "<1.2@asao.gcd.org>", p.digest));
  EXPECT_FALSE(db.verify_cram_md5("nopass", p.challenge, p.digest));
  EXPECT_FALSE(db.verify_cram_md5("nobody", p.challenge, p.digest));
  // No CRAM-MD5 secret: refused even for the right password.
  const auto anyone = cram_md5_digest(make_cram_md5_context("secret phrase"), p.challenge);
  EXPECT_FALSE(db.verify_cram_md5("anyone", p.challenge,
                                  std::string_view(reinterpret_cast<const char*>(anyone.data()), anyone.size())));
  EXPECT_FALSE(db.verify_cram_md5("sengoku", p.challenge, p.digest.substr(0, 15)));
  EXPECT_FALSE(db.verify_cram_md5("sengoku", p.challenge, ""));
}

TEST(auth_user_db, unknown_user_against_zero_digest_is_refused) {
  // The dummy context used for unknown users must not let anyone in.
  const user_db db = user_db::parse(seed_document());
  const auto dummy = cram_md5_digest(cram_md5_context{}, seed_challenge);
  EXPECT_FALSE(db.verify_cram_md5("nobody", seed_challenge,
                                  std::string_view(reinterpret_cast<const char*>(dummy.data()), dummy.size())));
}

TEST(auth_user_db, accepts_dovecot_tagged_cram_md5) {
  const user_db db = user_db::parse(json::parse(R"({"users": [{"name": "d",
      "cram_md5": "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740"}]})"));
  const auto digest = cram_md5_digest(make_cram_md5_context("password"), seed_challenge);
  EXPECT_TRUE(db.verify_cram_md5("d", seed_challenge,
                                 std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size())));
}

TEST(auth_user_db, sender_allowed) {
  const user_db db = user_db::parse(seed_document());
  struct row {
    const char* user;
    const char* address;
    bool allowed;
  };
  for (const row& r : {
           row{"sengoku", "sengoku@gcd.org", true},
           row{"sengoku", "SENGOKU@GCD.ORG", true},
           row{"sengoku", "other@gcd.org", false},
           row{"sengoku", "sengoku@gcd.org.evil", false},
           row{"sengoku", "anyone@example.org", true},
           row{"sengoku", "anyone@EXAMPLE.org", true},
           row{"sengoku", "anyone@sub.example.org", false},
           row{"sengoku", "anyone@notexample.org", false},
           row{"sengoku", "example.org", false},
           row{"sengoku", "", false},
           row{"anyone", "whoever@wherever.test", true},
           row{"anyone", "", true},
           row{"nopass", "x@y.test", true},
           row{"nobody", "x@y.test", false},
       })
    EXPECT_EQ(db.sender_allowed(r.user, r.address), r.allowed) << r.user << " " << r.address;
}

TEST(auth_user_db, scram_secrets) {
  const scram_secret real = make_scram_secret("pencil", "0123456789abcdef", 8192);
  const user_db db = user_db::parse(json{{"users",
                                          {{{"name", "sengoku"}, {"scram_sha256", scram_secret_to_text(real)}},
                                           {{"name", "nosecret"}, {"password", sengoku_hash()}}}}});
  const scram_secret found = db.scram_secret_for("sengoku");
  EXPECT_EQ(found.stored_key, real.stored_key);
  EXPECT_EQ(found.server_key, real.server_key);
  EXPECT_EQ(found.salt, real.salt);

  // Unknown names and users without a secret look like real users: the same
  // salt each time for a name, different salts for different names, the
  // real users' iteration count, and keys nobody holds.
  for (const char* name : {"nosecret", "nobody"}) {
    const scram_secret made_up = db.scram_secret_for(name);
    EXPECT_EQ(made_up.iterations, 8192u) << name;
    EXPECT_EQ(made_up.salt.size(), 16u);
    EXPECT_EQ(made_up.salt, db.scram_secret_for(name).salt) << name;
    EXPECT_NE(made_up.stored_key, real.stored_key);
    EXPECT_NE(made_up.stored_key, scram_secret{}.stored_key);
  }
  EXPECT_NE(db.scram_secret_for("nobody").salt, db.scram_secret_for("nobody2").salt);
  // Keyed per parsed file: another process (or a reload) gives other salts.
  const user_db again = user_db::parse(json{{"users", json::array()}});
  EXPECT_NE(again.scram_secret_for("nobody").salt, db.scram_secret_for("nobody").salt);
  EXPECT_EQ(again.scram_secret_for("nobody").iterations, scram_default_iterations);
}

TEST(auth_user_db, digest_md5_secrets) {
  const user_db db = user_db::parse(json{{"users",
                                          {{{"name", "chris"}, {"digest_md5", "EB5A750053E4D2C34AA84BBC9B0B6EE7"}},
                                           {{"name", "dove"}, {"digest_md5", "{DIGEST-MD5}" + std::string(32, 'f')}},
                                           {{"name", "none"}, {"password", sengoku_hash()}}}}});
  EXPECT_EQ(db.digest_md5_secret_for("chris")[0], 0xeb);
  EXPECT_EQ(db.digest_md5_secret_for("dove")[7], 0xff);
  // Made up for the others: stable per name, different between names.
  EXPECT_EQ(db.digest_md5_secret_for("none"), db.digest_md5_secret_for("none"));
  EXPECT_NE(db.digest_md5_secret_for("none"), db.digest_md5_secret_for("nobody"));
}

TEST(auth_user_db, budgets_of_their_own) {
  const auto none = user_db::parse(json::parse(R"({"users": [{"name": "a"}]})"));
  EXPECT_FALSE(none.find("a")->message_budget);
  EXPECT_FALSE(none.has_message_budgets() || none.has_recipient_budgets());
  const auto db = user_db::parse(json::parse(
      R"({"users": [{"name": "bulk", "message_budget": 0, "recipient_budget": 50000}, {"name": "b"}]})"));
  EXPECT_EQ(db.find("bulk")->message_budget, 0);
  EXPECT_EQ(db.find("bulk")->recipient_budget, 50000);
  EXPECT_FALSE(db.find("b")->message_budget);
  EXPECT_TRUE(db.has_message_budgets());
  EXPECT_TRUE(db.has_recipient_budgets());
  const auto only = user_db::parse(json::parse(R"({"users": [{"name": "r", "recipient_budget": 5}]})"));
  EXPECT_FALSE(only.has_message_budgets());
  EXPECT_TRUE(only.has_recipient_budgets());
}

TEST(auth_user_db, errors_name_the_json_path) {
  struct row {
    std::string document;
    std::string error;
  };
  for (const row& r : {
           row{R"([])", "(top level): expected an object"},
           row{R"({})", "users: is required"},
           row{R"({"users": {}})", "users: expected an array"},
           row{R"({"users": [], "groups": []})", "groups: unknown key"},
           row{R"({"users": [1]})", "users[0]: expected an object"},
           row{R"({"users": [{"name": "a", "password": "$6$salt$ha sh"}]})", "users[0].password: expected a crypt(3) hash"},
           row{R"({"users": [{"senders": []}]})", "users[0].name: is required"},
           row{R"({"users": [{"name": 7}]})", "users[0].name: expected a string"},
           row{R"({"users": [{"name": ""}]})", "users[0].name: must not be empty"},
           row{R"({"users": [{"name": "a"}, {"name": "bob"}, {"name": "bob"}]})",
               "users[2].name: duplicate user \"bob\""},
           row{R"({"users": [{"name": "a", "pasword": "x"}]})", "users[0].pasword: unknown key"},
           row{R"({"users": [{"name": "a", "password": 1}]})", "users[0].password: expected a string"},
           row{R"({"users": [{"name": "a", "password": ""}]})", "users[0].password: expected a crypt(3) hash"},
           row{R"({"users": [{"name": "a", "password": "!bad"}, {"name": "b", "password": "$q$x"}]})",
               "users[1].password: not a crypt(3) hash this libxcrypt supports"},
           row{R"({"users": [{"name": "a", "cram_md5": "abc"}]})", "users[0].cram_md5: expected 64 hex digits"},
           row{R"({"users": [{"name": "a", "cram_md5": ")" + std::string(63, '0') + R"(g"}]})",
               "users[0].cram_md5: expected 64 hex digits"},
           row{R"({"users": [{"name": "a", "cram_md5": null}]})", "users[0].cram_md5: expected a string"},
           row{R"({"users": [{"name": "a", "scram_sha256": 1}]})", "users[0].scram_sha256: expected a string"},
           row{R"({"users": [{"name": "a", "digest_md5": "abc"}]})",
               "users[0].digest_md5: expected 32 hex digits: MD5(user:realm:password)"},
           row{R"({"users": [{"name": "a", "digest_md5": ")" + std::string(31, '0') + R"(x"}]})",
               "users[0].digest_md5: expected 32 hex digits: MD5(user:realm:password)"},
           row{R"({"users": [{"name": "a", "scram_sha256": "SCRAM-SHA-256$1:AA==$AA==:AA=="}]})",
               "users[0].scram_sha256: expected \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\" "
               "(RFC 5803) or \"{SCRAM-SHA-256}<iterations>,<salt>,<StoredKey>,<ServerKey>\", base64 fields, "
               "4096 to 10000000 iterations"},
           row{R"({"users": [{"name": "a", "message_budget": -1}]})",
               "users[0].message_budget: expected a whole number from 0 (no limit) to 100000000"},
           row{R"({"users": [{"name": "a", "recipient_budget": "10"}]})",
               "users[0].recipient_budget: expected a whole number from 0 (no limit) to 100000000"},
           row{R"({"users": [{"name": "a", "recipient_budget": 2.5}]})",
               "users[0].recipient_budget: expected a whole number from 0 (no limit) to 100000000"},
           row{R"({"users": [{"name": "a", "senders": "a@b"}]})", "users[0].senders: expected an array"},
           row{R"({"users": [{"name": "a", "senders": ["a@b", 3]}]})", "users[0].senders[1]: expected a string"},
           row{R"({"users": [{"name": "a", "senders": ["a@b", "nodomain"]}]})",
               "users[0].senders[1]: expected \"local@domain\" or \"@domain\""},
           row{R"({"users": [{"name": "a", "senders": ["a@"]}]})",
               "users[0].senders[0]: expected \"local@domain\" or \"@domain\""},
           row{R"({"users": [{"name": "a", "senders": ["@relay@example.org"]}]})",
               "users[0].senders[0]: expected \"local@domain\" or \"@domain\""},
       })
    EXPECT_EQ(parse_error(json::parse(r.document)), r.error) << r.document;
}

class auth_user_db_file : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("smtpguard-auth-test-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
            std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const auto path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::string load_error(const std::string& path) {
    try {
      user_db::load(path);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "no error";
  }
  std::filesystem::path dir_;
};

TEST_F(auth_user_db_file, loads_a_file) {
  const user_db db = user_db::load(write("users.json", seed_document().dump(2)));
  EXPECT_EQ(db.size(), 4u);
  EXPECT_TRUE(db.verify_password("sengoku", "secret phrase"));
}

TEST_F(auth_user_db_file, errors_are_prefixed_with_the_file_name) {
  const std::string dup = write("dup.json", R"({"users": [{"name": "bob"}, {"name": "bob"}]})");
  EXPECT_EQ(load_error(dup), dup + ": users[1].name: duplicate user \"bob\"");
  const std::string broken = write("broken.json", R"({"users": [)");
  EXPECT_TRUE(load_error(broken).starts_with(broken + ": parse error")) << load_error(broken);
  const std::string missing = (dir_ / "missing.json").string();
  EXPECT_EQ(load_error(missing), missing + ": cannot read the users file");
}

}  // namespace
}  // namespace smtpguard::auth
