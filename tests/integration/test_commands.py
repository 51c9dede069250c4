"""Plain command replies, sequence errors and limits."""

import pytest

from harness import ConnectionClosed


def test_simple_commands(smtpguard):
    with smtpguard.wire_implicit() as w:
        r = w.cmd("NOOP")
        assert r.code == 250, f"NOOP: {r!r}"
        r = w.cmd("VRFY alice")
        assert r.code == 252 and r.enhanced == "2.5.0", f"VRFY: expected 252 2.5.0, got {r!r}"
        r = w.cmd("FROBNICATE now")
        assert r.code == 500 and r.enhanced == "5.5.2", f"unknown command: expected 500 5.5.2, got {r!r}"
        r = w.cmd("RSET")
        assert r.code == 250, f"RSET: {r!r}"
        r = w.cmd("QUIT")
        assert r.code == 221 and r.enhanced == "2.0.0", f"QUIT: expected 221 2.0.0, got {r!r}"
        with pytest.raises(ConnectionClosed):
            w.read_line()


def test_quit_before_tls(smtpguard):
    with smtpguard.wire_plain() as w:
        r = w.cmd("QUIT")
        assert r.code == 221, f"QUIT: {r!r}"


def test_sequence_errors(smtpguard, recorder):
    with smtpguard.wire_implicit() as w:
        w.login()
        r = w.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 503, f"RCPT before MAIL: expected 503, got {r!r}"
        r = w.cmd("DATA")
        assert r.code == 503, f"DATA before MAIL: expected 503, got {r!r}"
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        r = w.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 503, f"second MAIL in a transaction: expected 503, got {r!r}"
        r = w.cmd("DATA")
        assert r.reply_class == 5, f"DATA without any recipient: expected 5xx (503/554), got {r!r}"
        w.quit()
    recorder.expect_exactly(0)


def test_overlong_command_line_costs_a_reply_not_the_session(smtpguard):
    with smtpguard.wire_implicit() as w:
        r = w.cmd("NOOP " + "x" * 2000)
        assert r.code == 500, f"2005-octet command line: expected 500, got {r!r}"
        r = w.cmd("NOOP")
        assert r.code == 250, f"NOOP after an overlong line: {r!r}"


def test_max_recipients(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"limits": {"max_recipients": 2}})
    with guard.wire_implicit() as w:
        w.login()
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert w.cmd("RCPT TO:<r1@example.test>").code == 250
        assert w.cmd("RCPT TO:<r2@example.test>").code == 250
        r = w.cmd("RCPT TO:<r3@example.test>")
        assert r.reply_class in (4, 5), f"third recipient with max_recipients=2: expected 452/552, got {r!r}"
        assert w.cmd("DATA").code == 354
        assert w.cmd(b"Subject: limits\r\n\r\nx\r\n.").code == 250
        w.quit()
    [msg] = recorder.expect_exactly(1)
    assert msg.rcpt_tos == ["r1@example.test", "r2@example.test"], f"envelope recipients: {msg!r}"


def test_message_size_limit(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"limits": {"max_message_size": 2000}})
    with guard.wire_implicit() as w:
        assert w.ehlo().keywords().get("SIZE") == "2000"
        w.login()
        r = w.cmd("MAIL FROM:<alice@example.test> SIZE=5000")
        assert r.code == 552, f"MAIL with SIZE above the limit: expected 552, got {r!r}"
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert w.cmd("RCPT TO:<bob@example.test>").code == 250
        assert w.cmd("DATA").code == 354
        r = w.cmd(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100 + b".")
        assert r.code == 552, f"7 kB message with a 2000-octet limit: expected 552, got {r!r}"
        r = w.cmd("NOOP")
        assert r.code == 250, f"NOOP after an oversized message: {r!r}"
        w.quit()
    recorder.expect_exactly(0)
