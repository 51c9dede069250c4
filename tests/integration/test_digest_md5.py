"""AUTH DIGEST-MD5 (RFC 2831; historic per RFC 6331, so off unless listed):
GNU SASL's client against secrets from `smtpguard passwd --realm`."""

import json
import re
import shutil
import subprocess

import pytest

import harness
from harness import ALICE, HOSTNAME


def gsasl_digest(guard, user, password, realm=HOSTNAME):
    gsasl = shutil.which("gsasl")
    if gsasl is None:
        pytest.fail("gsasl (Debian package gsasl) is not installed; ./scripts/test installs it")
    proc = subprocess.run(
        [gsasl, "--smtp", f"--connect={harness.HOST}:{guard.starttls_port}", "--starttls",
         f"--x509-ca-file={guard.cert('ca.pem')}", f"--hostname={HOSTNAME}", "--mechanism=DIGEST-MD5",
         f"--authentication-id={user}", f"--password={password}", f"--realm={realm}", "--verbose"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def digest_guard(smtpguard_factory, binary, tmp_path):
    users = [harness.run_passwd(binary, name, password, "--realm", HOSTNAME)
             for name, password in (ALICE, ("nodigest", "x y z"))]
    assert re.fullmatch(r"[0-9a-f]{32}", users[0]["digest_md5"]), users[0]
    del users[1]["digest_md5"]
    path = tmp_path / "users-digest.json"
    path.write_text(json.dumps({"users": users}))
    return smtpguard_factory(config={"auth": {"users_file": str(path), "mechanisms": ["PLAIN", "DIGEST-MD5"]}})


def test_gsasl_logs_in(digest_guard):
    status, output = gsasl_digest(digest_guard, *ALICE)
    assert status == 0, output
    assert "250 AUTH PLAIN DIGEST-MD5" in output and "235 2.7.0" in output, output
    # GNU SASL checked rspauth, the server's own proof, before the 235.
    assert "server trusted" in output, output
    log = harness.read_text(digest_guard.stderr_path)
    assert "mechanism=DIGEST-MD5 user=alice result=success" in log, log


@pytest.mark.parametrize("user, password, realm", [("alice", "wrong", HOSTNAME), ("nodigest", "x y z", HOSTNAME),
                                                    ("mallory", "x", HOSTNAME), ("alice", ALICE[1], "other.test")])
def test_wrong_credentials_fail(digest_guard, user, password, realm):
    status, output = gsasl_digest(digest_guard, user, password, realm)
    assert status != 0, output
    # Another realm than the server's is refused before any check (501);
    # the rest look alike: 535.
    assert ("501 5.5.2" if realm != HOSTNAME else "535 5.7.8") in output, output


def test_not_offered_unless_listed(smtpguard):
    with smtpguard.smtp_ssl() as smtp:
        assert "DIGEST-MD5" not in smtp.esmtp_features.get("auth", "")
        assert smtp.docmd("AUTH", "DIGEST-MD5")[0] == 504
