"""SMTP AUTH (RFC 4954): where it is allowed, each mechanism, and the errors."""

import base64
import hashlib
import hmac
import smtplib
import time

import pytest

from harness import ALICE, BOB, b64, plain_response, smtplib_auth


def assert_reply(reply, code, enhanced, what):
    assert reply.code == code and reply.enhanced == enhanced, \
        f"{what}: expected {code} {enhanced}, got {reply!r}"


# -- before TLS ------------------------------------------------------------
def test_auth_before_starttls_is_refused_without_checking_credentials(smtpguard):
    with smtpguard.wire_plain() as w:
        w.ehlo()
        replies = []
        for password in ("correct horse", "wrong password"):
            started = time.monotonic()
            r = w.auth_plain("alice", password)
            elapsed = time.monotonic() - started
            assert_reply(r, 530, "5.7.0", f"AUTH PLAIN before STARTTLS (password {password!r})")
            # A credential check would cost the failed-AUTH delay for the wrong one.
            assert elapsed < 0.8, f"AUTH before STARTTLS took {elapsed:.2f}s: were the credentials checked?"
            replies.append(r.raw)
        assert replies[0] == replies[1], f"replies differ for right and wrong passwords: {replies!r}"
        r = w.cmd("AUTH LOGIN")
        assert_reply(r, 530, "5.7.0", "AUTH LOGIN before STARTTLS (no challenge may be sent)")
        r = w.cmd("STARTTLS")
        assert r.code == 220, f"session unusable after refused AUTH: {r!r}"


def test_mail_before_auth_in_plaintext(smtpguard):
    with smtpguard.wire_plain() as w:
        w.ehlo()
        assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0", "MAIL before STARTTLS")


def test_mail_before_auth_after_starttls(smtpguard, recorder):
    with smtpguard.wire_starttls() as w:
        assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0", "MAIL in TLS before AUTH")
        w.quit()
    recorder.expect_exactly(0)


def test_mail_before_auth_on_implicit_listener(smtpguard):
    with smtpguard.wire_implicit() as w:
        assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0", "MAIL before AUTH")


# -- successful AUTH ---------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("transport", ["implicit", "starttls"])
def test_auth_succeeds_with_smtplib(smtpguard, mechanism, transport):
    smtp = smtpguard.smtp_ssl() if transport == "implicit" else smtpguard.smtp_starttls()
    try:
        code, text = smtplib_auth(smtp, mechanism, *ALICE)
        assert code == 235, f"AUTH {mechanism}: expected 235, got {code} {text!r}"
        assert text.startswith(b"2.7.0"), f"AUTH {mechanism}: expected 235 2.7.0, got {code} {text!r}"
        code, text = smtp.mail("alice@example.test")
        assert code == 250, f"MAIL after AUTH {mechanism}: expected 250, got {code} {text!r}"
        smtp.rset()
    finally:
        smtp.close()


def test_smtplib_login_picks_a_mechanism(smtpguard):
    with smtpguard.smtp_starttls() as smtp:
        code, text = smtp.login(*BOB)
        assert code == 235, f"smtplib login(): expected 235, got {code} {text!r}"


def test_auth_login_dialogue(smtpguard):
    with smtpguard.wire_implicit() as w:
        r = w.cmd("AUTH LOGIN")
        assert r.code == 334, f"AUTH LOGIN: expected 334, got {r!r}"
        r = w.cmd(b64("alice"))
        assert r.code == 334, f"AUTH LOGIN user name: expected 334, got {r!r}"
        assert_reply(w.cmd(b64("correct horse")), 235, "2.7.0", "AUTH LOGIN password")


def test_auth_plain_with_empty_initial_challenge(smtpguard):
    with smtpguard.wire_implicit() as w:
        r = w.cmd("AUTH PLAIN")
        assert r.code == 334, f"AUTH PLAIN without initial response: expected 334, got {r!r}"
        assert_reply(w.cmd(plain_response(*ALICE)), 235, "2.7.0", "AUTH PLAIN response")


def test_auth_cram_md5_dialogue(smtpguard):
    with smtpguard.wire_implicit() as w:
        r = w.cmd("AUTH CRAM-MD5")
        assert r.code == 334, f"AUTH CRAM-MD5: expected 334, got {r!r}"
        challenge = base64.b64decode(r.lines[0].strip(), validate=True)
        assert challenge.startswith(b"<") and challenge.endswith(b">") and b"@" in challenge, \
            f"CRAM-MD5 challenge should be a msg-id (RFC 2195): {challenge!r}"
        digest = hmac.new(b"correct horse", challenge, hashlib.md5).hexdigest()
        assert_reply(w.cmd(b64(f"alice {digest}")), 235, "2.7.0", "AUTH CRAM-MD5 response")


# -- failures -----------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_wrong_password(smtpguard, mechanism):
    with smtpguard.smtp_ssl() as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            smtplib_auth(smtp, mechanism, "alice", "wrong password")
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8"), \
            f"AUTH {mechanism} with a wrong password: expected 535 5.7.8, got {e.value.smtp_code} {e.value.smtp_error!r}"


def test_unknown_user_looks_like_wrong_password_and_session_survives(smtpguard):
    with smtpguard.wire_implicit() as w:
        wrong = w.auth_plain("alice", "wrong password")
        assert_reply(wrong, 535, "5.7.8", "wrong password")
        unknown = w.auth_plain("mallory", "correct horse")
        assert_reply(unknown, 535, "5.7.8", "unknown user")
        assert wrong.raw == unknown.raw, f"unknown user and wrong password must look alike: {wrong!r} vs {unknown!r}"
        assert_reply(w.auth_plain(*ALICE), 235, "2.7.0", "right password after two failures")


def test_unknown_mechanism(smtpguard):
    with smtpguard.wire_implicit() as w:
        assert_reply(w.cmd("AUTH XYZZY"), 504, "5.5.4", "AUTH with an unknown mechanism")
        assert_reply(w.cmd("AUTH SCRAM-SHA-256"), 504, "5.5.4", "AUTH with a mechanism not enabled")
        assert_reply(w.auth_plain(*ALICE), 235, "2.7.0", "AUTH PLAIN afterwards")


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN", "CRAM-MD5"])
def test_cancel_with_star(smtpguard, mechanism):
    with smtpguard.wire_implicit() as w:
        r = w.cmd(f"AUTH {mechanism}")
        assert r.code == 334, f"AUTH {mechanism}: expected 334, got {r!r}"
        assert_reply(w.cmd("*"), 501, "5.0.0", f"cancelled AUTH {mechanism}")
        assert_reply(w.auth_plain(*ALICE), 235, "2.7.0", "AUTH PLAIN after a cancelled exchange")


def test_malformed_base64(smtpguard):
    with smtpguard.wire_implicit() as w:
        assert_reply(w.cmd("AUTH PLAIN %%%not-base64%%%"), 501, "5.5.2", "AUTH PLAIN with bad base64")
        r = w.cmd("AUTH LOGIN")
        assert r.code == 334, f"AUTH LOGIN: expected 334, got {r!r}"
        assert_reply(w.cmd("!!!!"), 501, "5.5.2", "AUTH LOGIN answered with bad base64")
        assert_reply(w.auth_plain(*ALICE), 235, "2.7.0", "AUTH PLAIN afterwards")


def test_second_auth_is_a_bad_sequence(smtpguard):
    with smtpguard.wire_implicit() as w:
        w.login("alice")
        assert_reply(w.auth_plain(*ALICE), 503, "5.5.1", "AUTH when already authenticated")


def test_sender_must_belong_to_user(smtpguard, recorder):
    with smtpguard.wire_implicit() as w:
        w.login("bob")
        assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 553, "5.7.1", "bob sending as alice")
        r = w.cmd("MAIL FROM:<bob@example.test>")
        assert r.code == 250, f"bob sending as himself: expected 250, got {r!r}"
        w.cmd("RSET")
    with smtpguard.wire_implicit() as w:
        w.login("alice")  # no senders list: any sender
        r = w.cmd("MAIL FROM:<anyone@elsewhere.test>")
        assert r.code == 250, f"alice may use any sender: expected 250, got {r!r}"
