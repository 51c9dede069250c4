"""Certificates, keys and the users file are replaced under live sessions:
on SIGHUP and when the files change on disk. Live sessions keep working,
new sessions see the change, and a broken new file keeps the old one serving."""

import hashlib
import json
import os
import shutil
import signal
import ssl

import pytest

from harness import ALICE, metric_value, read_text, run_passwd, smtplib_auth, wait_until


def served_fingerprint(guard):
    """SHA-256 of the certificate a fresh SMTPS connection is served."""
    with guard.wire_implicit(ehlo=False) as wire:
        der = wire.sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(path):
    with open(path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


@pytest.fixture
def reloadable(smtpguard_factory, certs, users_file, tmp_path):
    """smtpguard whose certificate and users file are copies this test may rewrite."""
    live = tmp_path / "live"
    live.mkdir()
    for name in ("server-ecdsa.pem", "server-ecdsa.key"):
        shutil.copy(os.path.join(certs, name), live / name)
    shutil.copy(users_file, live / "users.json")
    guard = smtpguard_factory(config={
        "reload_check_interval": 1,
        "tls": {"certificates": [{"cert": str(live / "server-ecdsa.pem"), "key": str(live / "server-ecdsa.key")}]},
        "auth": {"users_file": str(live / "users.json")},
    })
    return guard, live


def replace_certificate(live, certs, kind):
    # Key first, then certificate, each by rename, as ACME clients do.
    for suffix in ("key", "pem"):
        tmp = live / f"incoming.{suffix}"
        shutil.copy(os.path.join(certs, f"server-{kind}.{suffix}"), tmp)
        os.replace(tmp, live / f"server-ecdsa.{suffix}")


def reload_lines(guard, result):
    return [l for l in read_text(guard.stderr_path).splitlines() if "event=reload" in l and f"result={result}" in l]


def test_sighup_swaps_certificate_and_live_session_survives(reloadable, certs, recorder):
    guard, live = reloadable
    before = served_fingerprint(guard)
    assert before == file_fingerprint(os.path.join(certs, "server-ecdsa.pem"))
    with guard.smtp_ssl() as session:
        smtplib_auth(session, "PLAIN", *ALICE)
        replace_certificate(live, certs, "rsa")
        guard.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: reload_lines(guard, "success"), 5), read_text(guard.stderr_path)
        assert served_fingerprint(guard) == file_fingerprint(os.path.join(certs, "server-rsa.pem"))
        # The session opened before the reload still relays.
        session.sendmail("alice@example.test", ["bob@example.test"], b"Subject: across reload\r\n\r\nx\r\n")
    recorder.wait_for(1)
    assert recorder.messages()[0].content.endswith(b"Subject: across reload\r\n\r\nx\r\n")


def test_broken_certificate_keeps_the_old_one(reloadable):
    guard, live = reloadable
    before = served_fingerprint(guard)
    (live / "server-ecdsa.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: reload_lines(guard, "failure"), 5), read_text(guard.stderr_path)
    guard.assert_alive()
    assert served_fingerprint(guard) == before
    assert metric_value(guard.metrics(), "smtpguard_config_reloads_total", result="failure") >= 1


def test_file_change_is_noticed_without_a_signal(reloadable, certs):
    guard, live = reloadable
    replace_certificate(live, certs, "rsa")
    rsa = file_fingerprint(os.path.join(certs, "server-rsa.pem"))
    assert wait_until(lambda: served_fingerprint(guard) == rsa, 6), read_text(guard.stderr_path)
    assert any("trigger=file_change" in l for l in reload_lines(guard, "success"))


def test_new_user_can_log_in_after_reload(reloadable, binary):
    guard, live = reloadable
    users = json.loads((live / "users.json").read_text())
    users["users"].append(run_passwd(binary, "dave", "dave's new passphrase"))
    (live / "users.json.new").write_text(json.dumps(users))
    os.replace(live / "users.json.new", live / "users.json")
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: reload_lines(guard, "success"), 5), read_text(guard.stderr_path)
    with guard.smtp_ssl() as session:
        code, _ = smtplib_auth(session, "PLAIN", "dave", "dave's new passphrase")
        assert code == 235
