"""SMTP smuggling (SEC Consult, 2023): no client byte sequence may make the
backend see a message end other than the one smtpguard saw (CRLF.CRLF).

Under "reject" a message with a bare CR or LF is refused as a whole; under
"normalize" it is delivered once, with canonical CRLF line endings."""

import pytest

from harness import assert_received_then, has_bare_line_ending

# Fake end-of-data sequences, each followed by a smuggled second transaction.
FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CRLF": b"\r.\r\n",
}
HEAD = b"Subject: smuggling test\r\n\r\nhello"
SMUGGLED = (b"MAIL FROM:<evil@example.test>\r\n"
            b"RCPT TO:<victim@example.test>\r\n"
            b"DATA\r\n"
            b"smuggled\r\n")
TERMINATOR = b".\r\n"
# What the backend must receive under "normalize", whatever the fake end.
NORMALIZED = HEAD + b"\r\n.\r\n" + SMUGGLED


def open_data(w):
    w.login()
    for command, expected in (("MAIL FROM:<alice@example.test>", 250),
                              ("RCPT TO:<bob@example.test>", 250), ("DATA", 354)):
        r = w.cmd(command)
        assert r.code == expected, f"{command}: expected {expected}, got {r!r}"


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS))
def test_reject_policy_relays_nothing(smtpguard, recorder, fake_end):
    with smtpguard.wire_implicit() as w:
        open_data(w)
        w.send(HEAD + FAKE_ENDS[fake_end] + SMUGGLED + TERMINATOR)
        r = w.read_reply()
        assert r.reply_class == 5, (f"message with a bare line ending ({fake_end}) must be refused with a 5xx "
                                    f"under bare_line_endings=reject; got {r!r}")
        w.expect_silence(0.3)
        r = w.cmd("NOOP")
        assert r.code == 250, f"after the refused message, NOOP: {r!r}"
        w.quit()
    recorder.expect_exactly(0)
    smtpguard.assert_alive()


def test_reject_policy_session_recovers(smtpguard, recorder):
    """After a refused message the same session relays a clean one, once."""
    clean = b"Subject: clean\r\n\r\nclean message\r\n"
    with smtpguard.wire_implicit() as w:
        open_data(w)
        w.send(HEAD + FAKE_ENDS["LF.LF"] + SMUGGLED + TERMINATOR)
        r = w.read_reply()
        assert r.reply_class == 5, f"bare LF message: expected 5xx, got {r!r}"
        for command, expected in (("MAIL FROM:<alice@example.test>", 250),
                                  ("RCPT TO:<carol@example.test>", 250), ("DATA", 354)):
            r = w.cmd(command)
            assert r.code == expected, f"{command} after a refused message: expected {expected}, got {r!r}"
        r = w.cmd(clean + b".")
        assert r.code == 250, f"clean message: expected 250, got {r!r}"
        w.quit()
    [msg] = recorder.expect_exactly(1)
    assert msg.rcpt_tos == ["carol@example.test"], f"envelope recipients: {msg!r}"
    assert_received_then(msg.content, clean, rcpt="carol@example.test")


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS))
def test_normalize_policy_delivers_one_canonical_message(smtpguard_factory, recorder, fake_end):
    guard = smtpguard_factory(config={"smtp": {"bare_line_endings": "normalize"}})
    with guard.wire_implicit() as w:
        open_data(w)
        w.send(HEAD + FAKE_ENDS[fake_end] + SMUGGLED + TERMINATOR)
        r = w.read_reply()
        assert r.code == 250, f"normalize policy: expected 250 for the message, got {r!r}"
        # A smuggled transaction would produce more replies here.
        w.expect_silence(0.3)
        r = w.cmd("NOOP")
        assert r.code == 250 and len(r.lines) == 1, f"NOOP: {r!r}"
        w.quit()
    [msg] = recorder.expect_exactly(1)
    assert msg.mail_from == "alice@example.test" and msg.rcpt_tos == ["bob@example.test"], \
        f"envelope changed: {msg!r}"
    assert not has_bare_line_ending(msg.content), f"bare CR/LF reached the backend: {msg.content!r}"
    assert_received_then(msg.content, NORMALIZED, rcpt="bob@example.test")
