"""Message lines longer than RFC 5321's 1000 octets are folded, and a fold
can never hand the backend a lone "." (the end-of-data marker)."""

import smtplib

import pytest

from harness import ALICE, smtplib_auth


def test_long_line_is_folded_without_creating_an_end_marker(smtpguard, recorder):
    # The 999th octet of the first line is a dot: folding at 998 puts it
    # alone on a line of its own, which must reach the backend stuffed.
    body = b"A" * 998 + b".\r\n" + b"B" * 2500 + b"\r\nlast line\r\n"
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: long\r\n\r\n" + body)
    recorder.expect_exactly(1)
    content = recorder.messages()[0].content
    folded = (b"A" * 998 + b"\r\n.\r\n" + b"B" * 998 + b"\r\n" + b"B" * 998 + b"\r\n" + b"B" * 504 +
              b"\r\nlast line\r\n")
    assert content.endswith(b"Subject: long\r\n\r\n" + folded), content[-200:]
    assert all(len(line) <= 998 for line in content.split(b"\r\n"))


def test_without_folding_the_backend_verdict_is_relayed(smtpguard_factory, recorder):
    # aiosmtpd, like many MTAs, refuses lines over RFC 5321's limit: with
    # folding off, its refusal reaches the client and nothing is accepted.
    guard = smtpguard_factory(config={"limits": {"max_text_line": 0}})
    body = b"C" * 3000 + b"\r\n"
    with guard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: unfolded\r\n\r\n" + body)
    assert refused.value.smtp_code == 500, refused.value
    recorder.expect_exactly(0)
