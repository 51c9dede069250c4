"""Backend unreachable: temporary failures, never a false 250, session usable."""

import smtplib

import pytest

from harness import ALICE, free_port, smtplib_auth


@pytest.fixture
def guard_without_backend(smtpguard_factory):
    # A port nothing listens on: connections are refused at once.
    return smtpguard_factory(backend_address=f"127.0.0.1:{free_port()}")


def test_mail_gets_4xx_and_session_stays_usable(guard_without_backend):
    with guard_without_backend.wire_implicit() as w:
        w.login()
        for attempt in (1, 2):
            r = w.cmd("MAIL FROM:<alice@example.test>")
            assert r.reply_class == 4, f"MAIL #{attempt} with the backend down: expected 4xx, got {r!r}"
            assert r.enhanced and r.enhanced.startswith("4.4."), \
                f"MAIL #{attempt} with the backend down: expected enhanced code 4.4.x, got {r!r}"
        r = w.cmd("NOOP")
        assert r.code == 250, f"NOOP after backend failure: {r!r}"
        r = w.cmd("RSET")
        assert r.code == 250, f"RSET after backend failure: {r!r}"
        w.quit()
    guard_without_backend.assert_alive()


def test_smtplib_sendmail_sees_temporary_failure(guard_without_backend):
    with guard_without_backend.smtp_starttls() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: x\r\n\r\nx\r\n")
        assert 400 <= e.value.smtp_code < 500, f"expected a 4xx, got {e.value.smtp_code} {e.value.smtp_error!r}"
        code, _ = smtp.noop()
        assert code == 250
    guard_without_backend.assert_alive()
