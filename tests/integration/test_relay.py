"""Messages relayed to the backend: exact envelope, exact body bytes, the
Received header, and the backend's replies relayed back."""

import base64
import os
import re
import ssl

from harness import ALICE, Recorder, assert_received_then, smtplib_auth

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: relay test\r\n"
    b"Message-ID: <relay-test-1@example.test>\r\n"
    b"Date: Sun, 22 Nov 2026 19:00:00 +0000\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"the line above was a single dot\r\n"
    b" leading space, trailing space \r\n"
    b"\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)


def send(smtp, sender, rcpts, message, mail_options=()):
    code, text = smtp.mail(sender, list(mail_options))
    assert code == 250, f"MAIL FROM:<{sender}>: expected 250, got {code} {text!r}"
    for rcpt in rcpts:
        code, text = smtp.rcpt(rcpt)
        assert code == 250, f"RCPT TO:<{rcpt}>: expected 250, got {code} {text!r}"
    code, text = smtp.data(message)
    assert code == 250, f"end of DATA: expected 250, got {code} {text!r}"
    return text


def test_relay_over_implicit_tls_exact_bytes(smtpguard, recorder):
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp, "alice@example.test", ["bob@example.test"], MESSAGE)
    [msg] = recorder.expect_exactly(1)
    assert msg.mail_from == "alice@example.test", f"envelope sender: {msg!r}"
    assert msg.rcpt_tos == ["bob@example.test"], f"envelope recipients: {msg!r}"
    m = assert_received_then(msg.content, MESSAGE, rcpt="bob@example.test")
    assert m.group("tls") == b"TLSv1.3", f"a default client negotiates TLS 1.3: {m.group(0)!r}"
    assert b"with ESMTPSA" in m.group(0) and b"authenticated user alice" in m.group(0)


def test_relay_over_starttls_two_recipients(smtpguard, recorder):
    with smtpguard.smtp_starttls() as smtp:
        smtplib_auth(smtp, "LOGIN", *ALICE)
        send(smtp, "alice@example.test", ["bob@example.test", "carol@example.test"], MESSAGE)
    [msg] = recorder.expect_exactly(1)
    assert msg.mail_from == "alice@example.test"
    assert msg.rcpt_tos == ["bob@example.test", "carol@example.test"], f"envelope recipients: {msg!r}"
    # Several recipients: no "for <...>" clause.
    assert_received_then(msg.content, MESSAGE, rcpt=None)


def test_tls12_client_is_recorded_as_tls12(smtpguard, recorder):
    with smtpguard.smtp_ssl(max_version=ssl.TLSVersion.TLSv1_2) as smtp:
        assert smtp.sock.version() == "TLSv1.2"
        smtplib_auth(smtp, "CRAM-MD5", *ALICE)
        send(smtp, "alice@example.test", ["bob@example.test"], MESSAGE)
    [msg] = recorder.expect_exactly(1)
    m = assert_received_then(msg.content, MESSAGE, rcpt="bob@example.test", tls_version=rb"TLSv1\.2")
    assert m.group("cipher") != b"", m.group(0)


def test_end_of_data_reply_carries_backend_queue_id(smtpguard, recorder):
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        text = send(smtp, "alice@example.test", ["bob@example.test"], MESSAGE)
    [msg] = recorder.expect_exactly(1)
    queue_id = f"rec{msg.n:06d}".encode()
    assert queue_id in text, f"the backend's queue id {queue_id!r} is missing from the 250 reply {text!r}"


def test_rejected_recipient_is_relayed(smtpguard, recorder):
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        code, text = smtp.mail("alice@example.test")
        assert code == 250, (code, text)
        code, text = smtp.rcpt(Recorder.REJECT)
        assert code == 550 and text.startswith(b"5.1.1"), \
            f"backend's 550 5.1.1 for {Recorder.REJECT} not relayed: {code} {text!r}"
        code, text = smtp.rcpt("bob@example.test")
        assert code == 250, (code, text)
        code, text = smtp.data(MESSAGE)
        assert code == 250, (code, text)
    [msg] = recorder.expect_exactly(1)
    assert msg.rcpt_tos == ["bob@example.test"], f"envelope recipients: {msg!r}"


def test_multiline_reply_is_relayed(smtpguard, recorder):
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        smtp.mail("alice@example.test")
        code, text = smtp.rcpt(Recorder.MULTILINE)
        assert code == 250, (code, text)
        assert b"first line of a multi-line reply" in text and b"second line" in text, \
            f"two-line backend reply not relayed whole: {text!r}"
        smtp.rset()


def test_two_messages_in_one_session(smtpguard, recorder):
    second = MESSAGE.replace(b"relay test", b"second message")
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp, "alice@example.test", ["bob@example.test"], MESSAGE)
        send(smtp, "alice@example.test", ["carol@example.test"], second)
    first_msg, second_msg = recorder.expect_exactly(2)
    assert first_msg.rcpt_tos == ["bob@example.test"] and second_msg.rcpt_tos == ["carol@example.test"]
    assert_received_then(first_msg.content, MESSAGE, rcpt="bob@example.test")
    assert_received_then(second_msg.content, second, rcpt="carol@example.test")


def test_rset_abandons_the_transaction(smtpguard, recorder):
    with smtpguard.wire_implicit() as w:
        w.login()
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert w.cmd("RCPT TO:<bob@example.test>").code == 250
        r = w.cmd("RSET")
        assert r.code == 250, f"RSET: {r!r}"
        r = w.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 503, f"RCPT after RSET without MAIL: expected 503, got {r!r}"
        w.quit()
    recorder.expect_exactly(0)


def test_eight_bit_body_is_intact(smtpguard, recorder):
    body = ("Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße, ça va? Ελληνικά 日本語\r\n\xa0\r\n").encode("utf-8") + bytes(range(0x80, 0x100)) + b"\r\n"
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        options = ["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else []
        send(smtp, "alice@example.test", ["bob@example.test"], body, options)
    [msg] = recorder.expect_exactly(1)
    assert_received_then(msg.content, body, rcpt="bob@example.test")


def test_one_megabyte_message_is_intact(smtpguard, recorder):
    raw = os.urandom(768 * 1024)
    lines = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    message = b"Subject: big\r\nContent-Transfer-Encoding: base64\r\n\r\n" + lines + b".\r\n..\r\n"
    assert len(message) > 1_000_000
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp, "alice@example.test", ["bob@example.test"], message)
    [msg] = recorder.expect_exactly(1)
    assert_received_then(msg.content, message, rcpt="bob@example.test")


def test_received_id_differs_between_sessions(smtpguard, recorder):
    for _ in range(2):
        with smtpguard.smtp_ssl() as smtp:
            smtplib_auth(smtp, "PLAIN", *ALICE)
            send(smtp, "alice@example.test", ["bob@example.test"], MESSAGE)
    a, b = recorder.expect_exactly(2)
    id_a = assert_received_then(a.content, MESSAGE, rcpt="bob@example.test").group("id")
    id_b = assert_received_then(b.content, MESSAGE, rcpt="bob@example.test").group("id")
    assert id_a != id_b, f"two sessions got the same Received id {id_a!r}"
    assert re.fullmatch(rb"[A-Za-z0-9._:+/=-]+", id_a)
