"""A listener of role mx: anyone may deliver to relay.local_domains (as the
MX of those domains must let them), nowhere else unless authorized:
`554 5.7.1 Relay access denied`. Not an open relay, and the submission
listener beside it is unchanged."""

import json
import re
import shutil
import smtplib
import subprocess

import pytest

from harness import ALICE, HOST, IO_TIMEOUT, metric_value, read_text, smtplib_auth

# require_tls left out: an MX defaults to not demanding TLS (RFC 3207 section 4).
MX = {"role": "mx", "require_tls": None}
DOMAINS = {"relay": {"local_domains": ["example.test", ".lists.example.test"]}}


def mx_guard(smtpguard_factory):
    return smtpguard_factory(config=DOMAINS, submission=MX)


def test_swaks_delivers_to_a_local_domain_without_auth_or_tls(smtpguard_factory, recorder):
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed; ./scripts/test installs it")
    guard = mx_guard(smtpguard_factory)
    proc = subprocess.run(["swaks", "--server", HOST, "--port", str(guard.starttls_port),
                           "--from", "someone@remote.example", "--to", "bob@example.test",
                           "--helo", "remote.example", "--data", "Subject: inbound\n\nhello MX\n",
                           "--timeout", "20"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [message] = recorder.expect_exactly(1)
    assert message.rcpt_tos == ["bob@example.test"]
    header = message.content.split(b"\r\n\r\n")[0]
    assert b"with ESMTP id" in header and b"authenticated user" not in header, header


def test_other_domains_are_refused(smtpguard_factory, recorder):
    guard = mx_guard(smtpguard_factory)
    with smtplib.SMTP(HOST, guard.starttls_port, timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo("remote.example")
        assert smtp.mail("someone@remote.example")[0] == 250
        for rcpt in ("victim@elsewhere.example", "x@example.test.elsewhere.example", "x@lists.example.test",
                     "x@sub.example.test"):
            code, reply = smtp.rcpt(rcpt)
            assert (code, reply) == (554, b"5.7.1 Relay access denied"), (rcpt, code, reply)
        assert smtp.rcpt("dev@a.lists.example.test")[0] == 250
        assert smtp.rcpt("postmaster")[0] == 250
        code, _ = smtp.data(b"Subject: mixed\r\n\r\nonly the local ones\r\n")
        assert code == 250
    [message] = recorder.expect_exactly(1)
    assert message.rcpt_tos == ["dev@a.lists.example.test", "postmaster"], message
    assert re.search(r"event=relay_denied session=\S+ client=127\.0\.0\.1 recipient=victim@elsewhere\.example",
                     read_text(guard.stderr_path))
    assert metric_value(guard.metrics(), "smtpguard_rejections_total", reason="relay_denied") == 4


def test_nothing_but_refused_recipients_sends_nothing(smtpguard_factory, recorder):
    guard = mx_guard(smtpguard_factory)
    with smtplib.SMTP(HOST, guard.starttls_port, timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo("remote.example")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("someone@remote.example", ["victim@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
    recorder.expect_exactly(0)


def test_an_authenticated_client_relays_anywhere(smtpguard_factory, recorder):
    guard = mx_guard(smtpguard_factory)
    with smtplib.SMTP(HOST, guard.starttls_port, timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo("laptop.example")
        assert "auth" not in smtp.esmtp_features, "no AUTH before TLS"
        smtp.starttls(context=guard.tls_context())
        smtp.ehlo("laptop.example")
        smtplib_auth(smtp, "PLAIN", *ALICE)
        smtp.sendmail("alice@example.test", ["friend@elsewhere.example"], b"Subject: out\r\n\r\nout\r\n")
    [message] = recorder.expect_exactly(1)
    assert message.rcpt_tos == ["friend@elsewhere.example"]


def test_the_submission_listener_beside_it_is_unchanged(smtpguard_factory, recorder):
    guard = mx_guard(smtpguard_factory)
    with guard.smtp_ssl() as smtp:
        code, reply = smtp.mail("someone@remote.example")
        assert (code, reply[:5]) == (530, b"5.7.0"), (code, reply)
    recorder.expect_exactly(0)


def test_an_mx_listener_needs_local_domains(smtpguard_factory, binary, tmp_path):
    guard = smtpguard_factory(config=DOMAINS, submission=MX)
    guard.config.pop("relay")
    bad = tmp_path / "no-domains.json"
    bad.write_text(json.dumps(guard.config))
    proc = subprocess.run([binary, "--check-config", "--config", str(bad)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0
    assert "relay.local_domains: is required by listeners[1], of role \"mx\"" in proc.stderr, proc.stderr
