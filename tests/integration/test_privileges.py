"""Started as root, smtpguard binds its ports and then serves as the
configured unprivileged account; without one it says so in its log."""

import os

import pytest

from harness import ALICE, read_text, smtplib_auth, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs to start as root")


def process_ids(pid):
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]


def test_switches_to_configured_user_after_binding(smtpguard_factory, recorder):
    import pwd
    nobody = pwd.getpwnam("nobody")
    guard = smtpguard_factory(config={"user": "nobody"})
    # The ports answer as soon as they are bound, a moment before the switch.
    wait_until(lambda: process_ids(guard.proc.pid)[0][0] != 0, timeout=5)
    uids, gids = process_ids(guard.proc.pid)
    assert set(uids) == {nobody.pw_uid}, f"real/effective/saved/fs uids {uids}, expected only nobody"
    assert set(gids) == {nobody.pw_gid}, f"gids {gids}, expected only nobody's group"
    # Keys and users were read before switching: it still serves TLS and AUTH.
    with guard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: nobody\r\n\r\nx\r\n")
    recorder.wait_for(1)
    assert "event=privileges_dropped user=nobody" in read_text(guard.stderr_path)


def test_warns_when_left_running_as_root(smtpguard):
    assert "running as root" in read_text(smtpguard.stderr_path)


def test_unknown_account_is_a_startup_error(smtpguard_factory):
    with pytest.raises(AssertionError, match="no such account"):
        smtpguard_factory(config={"user": "no-such-user-here"})
