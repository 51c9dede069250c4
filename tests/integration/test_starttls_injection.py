"""STARTTLS command injection (CVE-2011-0411 and relatives): plaintext
pipelined after STARTTLS must be discarded, never executed inside TLS."""

import pytest

from harness import plain_response

INJECTIONS = {
    "mail": b"MAIL FROM:<a@example.test>\r\n",
    "ehlo": b"EHLO x\r\n",
    "full-transaction": (
        b"EHLO evil.example.test\r\n"
        b"AUTH PLAIN " + plain_response("alice", "correct horse").encode() + b"\r\n"
        b"MAIL FROM:<alice@example.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\n"
        b"DATA\r\n"
        b"Subject: injected\r\n\r\ninjected\r\n.\r\n"
    ),
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_bytes_after_starttls_are_discarded(smtpguard, recorder, name):
    with smtpguard.wire_plain() as w:
        w.ehlo()
        w.send(b"STARTTLS\r\n" + INJECTIONS[name])
        r = w.read_reply()
        assert r.code == 220 and r.enhanced == "2.0.0", f"STARTTLS: expected 220 2.0.0, got {r!r}"
        assert not w.buf, f"plaintext replies to the injected commands: {w.buf!r}"
        w.sock = smtpguard.tls_context().wrap_socket(w.sock, server_hostname="mail.example.test")
        # Nothing may arrive unasked: a reply here would answer an injected command.
        w.expect_silence(0.5)
        r = w.cmd("NOOP")
        assert r.code == 250 and len(r.lines) == 1, \
            f"first reply inside TLS should be the NOOP's single-line 250, got {r!r}"
        w.expect_silence(0.3)
        w.ehlo()
        r = w.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 530 and r.enhanced == "5.7.0", \
            f"MAIL in TLS without AUTH in TLS (injected AUTH must not count): expected 530 5.7.0, got {r!r}"
        w.quit()
    recorder.expect_exactly(0)
    smtpguard.assert_alive()
