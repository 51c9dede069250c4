"""A real, private Postfix as the backend: mail lands in its Maildir."""

import re
import time

import pytest

from harness import ALICE, HOST, received_regex, relay_to_mta, smtplib_auth, wait_until

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Someone <someone@example.test>\r\n"
    b"Subject: through smtpguard into Postfix\r\n"
    b"Message-ID: <postfix-test-1@example.test>\r\n"
    b"Date: Sun, 22 Nov 2026 19:00:00 +0000\r\n"
    b"\r\n"
    b"Hello from the integration test.\r\n"
    b".a dot line\r\n"
    b"bye\r\n"
)


@pytest.fixture
def guard(smtpguard_factory, postfix):
    return smtpguard_factory(backend_address=f"{HOST}:{postfix.port}")


def test_message_is_delivered_to_maildir(guard, postfix):
    sent = relay_to_mta(guard, postfix, MESSAGE, rb"queued as ([0-9A-Za-z]+)")
    # Postfix stores Maildir files with LF line endings and puts its own
    # trace headers (Return-Path, Delivered-To, Received) on top of ours.
    assert b"by backend.example.test (Postfix)" in sent.stored[:sent.received.start()], \
        f"Postfix's own Received header should come first:\n{sent.stored.decode(errors='replace')}"
    assert sent.queue_id in postfix.log(), "queue id in the reply is not Postfix's"
    assert "status=sent (delivered to maildir)" in postfix.log()


def test_size_advertised_is_postfixs_smaller_limit(guard, postfix):
    """Postfix's message_size_limit (10240000) is below ours (10485760)."""
    # The backend's capabilities may be learned lazily: give it a few tries.
    deadline = time.monotonic() + 10
    while True:
        with guard.wire_implicit(ehlo=False) as w:
            size = w.ehlo().keywords().get("SIZE")
            w.login()
            w.cmd("MAIL FROM:<alice@example.test>")
            w.cmd("RSET")
            w.quit()
        if size == "10240000" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert size == "10240000", f"EHLO SIZE should be min(ours, Postfix's) = 10240000, got {size!r}"


def test_two_recipients_delivered(guard, postfix):
    already = len(postfix.delivered())
    body = b"Subject: two recipients\r\nMessage-ID: <postfix-test-2@example.test>\r\n\r\nhi\r\n"
    with guard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "CRAM-MD5", *ALICE)
        refused = smtp.sendmail("alice@example.test", ["one@example.test", "two@example.test"], body)
        assert refused == {}, f"recipients refused: {refused}"
    paths = postfix.wait_for_delivery(already + 2)
    for path in paths[already:]:
        with open(path, "rb") as f:
            stored = f.read()
        assert received_regex(rcpt=None, eol=b"\n").search(stored), \
            f"smtpguard's Received header (no 'for', two recipients) missing:\n{stored.decode(errors='replace')}"
        assert stored.endswith(b"\n\nhi\n")


def test_sessions_one_after_another_share_one_postfix_connection(smtpguard_factory, postfix):
    """Each session leaves its backend connection for the next: Postfix sees
    one connection carrying three transactions, QUIT once it sat idle."""
    guard = smtpguard_factory(config={"threads": 1, "backend": {"reuse_idle": 1, "health_interval": 3600}},
                              backend_address=f"{HOST}:{postfix.port}")
    already = len(postfix.delivered())
    log_start = len(postfix.log())
    for n in (1, 2, 3):
        body = f"Subject: kept {n}\r\nMessage-ID: <postfix-reuse-{n}@example.test>\r\n\r\nhi\r\n".encode()
        with guard.smtp_ssl() as smtp:
            smtplib_auth(smtp, "PLAIN", *ALICE)
            assert smtp.sendmail("alice@example.test", ["someone@example.test"], body) == {}
    postfix.wait_for_delivery(already + 3)
    stored = postfix.messages()[already:]
    # Every message still carries its own session's Received header.
    ids = set()
    for message in stored:
        m = received_regex(rcpt="someone@example.test", eol=b"\n").search(message)
        assert m, message.decode(errors="replace")
        ids.add(m.group("id"))
    assert len(ids) == 3, ids

    def transactions():
        return [line for line in re.findall(r"disconnect from \S+ (.*)", postfix.log()[log_start:])
                if "mail=" in line]

    assert wait_until(transactions, 10), postfix.log()[log_start:]
    assert transactions() == ["ehlo=1 mail=3 rcpt=3 data=3 quit=1 commands=11"], postfix.log()[log_start:]
